/*-------------------------------------------------------------------------
 * Program.cs
 *   Entry point of the test executable.
 *
 * NOTES
 *   One executable plays two parts. Run plainly (dotnet test, or directly,
 *   or as PgIpc.Tests.exe under Wine) it is the Microsoft.Testing.Platform
 *   host running the NUnit suite. Run as "PgIpc.Tests worker ..." it is the
 *   test worker: a child process the cross-process tests start, which
 *   attaches to a segment by handle and runs commands. One binary means the
 *   worker is always built, copied and published together with the tests,
 *   on Linux and in the self-contained win-x64 publish alike.
 *-------------------------------------------------------------------------
 */
using Microsoft.Testing.Platform.Builder;

namespace PgIpc.Tests;

internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args.Length > 0 && args[0] == TestWorker.Verb)
            return TestWorker.Run(args[1..]);

        ITestApplicationBuilder builder = await TestApplication.CreateBuilderAsync(args);
        SelfRegisteredExtensions.AddSelfRegisteredExtensions(builder, args);
        using ITestApplication app = await builder.BuildAsync();
        return await app.RunAsync();
    }
}

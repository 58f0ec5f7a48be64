/*-------------------------------------------------------------------------
 * TestEnvironment.cs
 *   Assembly-wide set-up and teardown; backend list; unique keys; OS
 *   object counts.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Platform;

namespace PgIpc.Tests;

/// <remarks>
/// Under Wine (the Windows leg) an exception that leaves a delegate NUnit invokes through reflection
/// (<c>Assert.That(() => ..., Throws...)</c>, <c>Assert.Ignore</c>) leaves a stale SEH frame on the thread and the
/// next exception there hangs the run. Check exceptions with <c>Assert.Throws</c> / <c>Assert.Catch</c> only.
/// Tests run one at a time (NUnit's default; nothing asks for parallelism): several of them count OS
/// objects or lower process-wide settings. [NonParallelizable] is not used because NUnit's non-parallel
/// queue hangs under Wine.
/// </remarks>
[SetUpFixture]
public sealed class TestEnvironment
{
    private static int s_counter;

    /// <summary>
    /// Tests where the parent and its children spin on shared memory at the same time. Under Wine the
    /// .NET runtime's thread suspension (GC, tiering) can hang a thread in such a loop, so .ci/run's
    /// Windows leg leaves this category out; it runs on Linux and Posix, and on real Windows.
    /// </summary>
    public const string BusyAcrossProcesses = "BusyAcrossProcesses";

    /// <summary>Every backend this machine has (Linux and Posix on Linux; Windows on Windows).</summary>
    public static IEnumerable<string> Backends() => PgIpcPlatform.Available().Select(p => p.Name);

    /// <summary>A cluster key no other test (or test run) uses.</summary>
    public static string UniqueKey(string what)
    {
        string k = $"t{Environment.ProcessId}.{Interlocked.Increment(ref s_counter)}.{what}.{Guid.NewGuid().ToString("N")[..8]}";
        return k.Length <= 63 ? k : k[..63];
    }

    [OneTimeTearDown]
    public void KillChildren() => ChildWorker.KillAll();
}

/// <summary>Counts of OS shared memory objects visible to everyone (Linux: ipcs -m and /dev/shm).</summary>
internal static class OsObjects
{
    public static bool CanCount => OperatingSystem.IsLinux();

    /// <summary>Lines of `ipcs -m` that describe a segment.</summary>
    public static int SysVSegments()
    {
        var psi = new ProcessStartInfo("ipcs", "-m") { RedirectStandardOutput = true, UseShellExecute = false };
        using Process p = Process.Start(psi)!;
        string text = p.StandardOutput.ReadToEnd();
        p.WaitForExit(10_000);
        return text.Split('\n').Count(l => l.StartsWith("0x", StringComparison.Ordinal));
    }

    /// <summary>PgIpc entries in /dev/shm.</summary>
    public static int DevShmEntries()
        => Directory.Exists("/dev/shm") ? Directory.GetFiles("/dev/shm", "pgipc.*").Length : 0;
}

/// <summary>Runs work on dedicated threads (never the pool, whose growth is slow under Wine), all at once.</summary>
internal static class TestThreads
{
    public static void Run(int count, Action<int> body)
    {
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var threads = new Thread[count];
        for (int i = 0; i < count; i++)
        {
            int index = i;
            threads[i] = new Thread(() =>
            {
                try { body(index); }
                catch (Exception ex) { errors.Enqueue(ex); }
            }) { IsBackground = true };
            threads[i].Start();
        }
        foreach (Thread t in threads)
            if (!t.Join(TimeSpan.FromSeconds(120)))
                Assert.Fail("a test thread did not finish within 120 s");
        if (!errors.IsEmpty)
            throw new AggregateException(errors);
    }
}

/// <summary>Exceptions as values, for tests that collect several outcomes before asserting them together.</summary>
internal static class Outcome
{
    /// <summary>What <paramref name="a"/> threw, or null.</summary>
    public static Exception? Capture(Action a)
    {
        try
        {
            a();
            return null;
        }
        catch (Exception ex)
        {
            return ex;
        }
    }
}

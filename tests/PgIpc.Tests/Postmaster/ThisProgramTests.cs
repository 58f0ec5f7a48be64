/*-------------------------------------------------------------------------
 * ThisProgramTests.cs
 *   The command line that starts this program again: the executable, the
 *   entry assembly first under the dotnet host, then the verb and its
 *   arguments in order; ChildSpec.ForThisProgram and ThisProgram.StartInfo
 *   give the same command.
 *
 * NOTES
 *   Real starts through the helper are exercised by every test that runs a
 *   child: ChildWorker (ThisProgram.StartInfo) and the supervisor tests'
 *   PostmasterWorkerCommands.Spec (ChildSpec.ForThisProgram).
 *-------------------------------------------------------------------------
 */
using System.Reflection;
using NUnit.Framework;
using PgIpc.Postmaster;
using PgIpc.Proc;

namespace PgIpc.Tests.Postmaster;

public sealed class ThisProgramTests
{
    private static List<string> Expected(string verb, params string[] args)
    {
        List<string> expected = [];
        if (ThisProgram.RunsOnDotnetHost)
            expected.Add(Assembly.GetEntryAssembly()!.Location);
        expected.Add(verb);
        expected.AddRange(args);
        return expected;
    }

    [Test]
    public void CommandIsThisExecutableThenTheVerbAndArguments()
    {
        (string file, List<string> args) = ThisProgram.Command("some-verb", ["a", "b c", ""]);
        Assert.That(file, Is.EqualTo(Environment.ProcessPath));
        Assert.That(args, Is.EqualTo(Expected("some-verb", "a", "b c", "")));
    }

    [Test]
    public void StartInfoRunsTheSameCommandWithNothingRedirected()
    {
        var psi = ThisProgram.StartInfo("some-verb", "--backend", "x");
        Assert.That(psi.FileName, Is.EqualTo(ThisProgram.ExecutablePath));
        Assert.That(psi.ArgumentList, Is.EqualTo(Expected("some-verb", "--backend", "x")));
        Assert.That(psi.UseShellExecute, Is.False);
        Assert.That(psi.RedirectStandardInput || psi.RedirectStandardOutput || psi.RedirectStandardError, Is.False);
    }

    [Test]
    public void ForThisProgramKeepsKindAndRestartInterval()
    {
        ChildSpec spec = ChildSpec.ForThisProgram("child", "some-verb", ["1"], ProcKind.Auxiliary, restartIntervalMs: 250);
        Assert.That(spec.Name, Is.EqualTo("child"));
        Assert.That(spec.FileName, Is.EqualTo(ThisProgram.ExecutablePath));
        Assert.That(spec.Arguments, Is.EqualTo(Expected("some-verb", "1")));
        Assert.That(spec.Kind, Is.EqualTo(ProcKind.Auxiliary));
        Assert.That(spec.RestartIntervalMs, Is.EqualTo(250));

        ChildSpec plain = ChildSpec.ForThisProgram("worker", "some-verb", []);
        Assert.That(plain.Kind, Is.EqualTo(ProcKind.BackgroundWorker));
        Assert.That(plain.IsPermanent, Is.False);
    }

    [TestCase("dotnet", true)]
    [TestCase("/usr/share/dotnet/dotnet", true)]
    [TestCase("DOTNET.EXE", true)]
    [TestCase("/opt/app/pgipc", false)]
    [TestCase("/opt/app/dotnet-tool", false)]
    public void TheDotnetHostIsRecognisedByFileName(string path, bool isHost)
        => Assert.That(ThisProgram.IsDotnetHost(path), Is.EqualTo(isHost));
}

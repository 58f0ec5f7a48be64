/*-------------------------------------------------------------------------
 * CliTests.cs
 *   pgipc (src/Cli) run as a process, as a user runs it: bad command lines
 *   are refused with exit code 2 and a message on stderr and do nothing
 *   (a stale segment planted first survives `cleanup --dryrun`); each
 *   command has its own help; `inspect --json` parses and has the fields of
 *   every view; `cleanup --dry-run` lists a planted stale segment and
 *   leaves it.
 *
 * NOTES
 *   The CLI is the one built beside these tests (src/Cli/bin/<config>/
 *   net10.0/pgipc; the test project builds it first, see the csproj), or
 *   the executable PGIPC_TEST_CLI names (to run these tests against
 *   another build, e.g. an older one, to see them fail). Unix only: the
 *   Windows leg runs a published test executable without the CLI beside
 *   it, and a stale segment cannot exist on Windows (the kernel drops it
 *   with its last handle).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Text.Json;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Cli;

[OnlyOn(Os.Unix, "runs the CLI built beside the tests and plants stale segments (none exist on Windows)")]
public sealed class CliTests
{
    private const long Size = 1 << 20;
    private readonly List<ChildWorker> _children = [];
    private readonly List<(IPgIpcPlatform Platform, string Id)> _planted = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        foreach ((IPgIpcPlatform p, string id) in _planted)
            p.SharedMemory.Remove(id);
        _planted.Clear();
    }

    [TestCase("cleanup", "--dryrun")]
    [TestCase("demo", "--workers", "abc")]
    [TestCase("demo", "--workers", "0")]
    [TestCase("demo", "--seconds", "-1")]
    [TestCase("demo", "--parallel", "--crash")]
    [TestCase("demo", "--parallel", "--no-wal")]
    [TestCase("demo", "--workers")]
    [TestCase("inspect")]
    [TestCase("inspect", "not-a-handle")]
    [TestCase("cleanup", "--backend", "no-such-backend")]
    [TestCase("backends", "--json")]
    [TestCase("frobnicate")]
    public void BadCommandLineIsRefusedWithExitCode2AndAMessage(params string[] args)
    {
        CliResult r = Cli.Run(args);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
        Assert.That(r.Stderr, Does.StartWith("pgipc: "), r.ToString());
        Assert.That(r.Stderr, Does.Contain("--help"), "points at the command's help");
        Assert.That(r.Stdout, Is.Empty, "nothing was done, nothing printed");
    }

    [Test]
    public void CleanupWithATypoRemovesNothing()
    {
        (IPgIpcPlatform platform, string id) = PlantStaleSegment();
        CliResult r = Cli.Run("cleanup", "--dryrun");
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
        Assert.That(r.Stderr, Does.Contain("--dryrun"), "the message names the unknown option");
        Assert.That(platform.SharedMemory.QueryStatus(id).Exists, Is.True, "a refused command line removes nothing");
    }

    [Test]
    public void CleanupDryRunListsTheStaleSegmentAndLeavesIt()
    {
        (IPgIpcPlatform platform, string id) = PlantStaleSegment();
        CliResult r = Cli.Run("cleanup", "--dry-run", "--backend", platform.Name);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        string? line = r.Stdout.Split('\n').FirstOrDefault(l => l.Contains(id, StringComparison.Ordinal));
        Assert.That(line, Is.Not.Null, $"the stale segment {id} is listed:\n{r.Stdout}");
        Assert.That(line, Does.Contain("stale").And.Contain("would remove"));
        Assert.That(line, Does.Not.Contain("\x1b["), "no colour when the output is redirected");
        Assert.That(r.Stdout, Does.Contain("nothing removed (dry run)"));
        Assert.That(platform.SharedMemory.QueryStatus(id).Exists, Is.True, "a dry run removes nothing");
    }

    [TestCase("demo", "--workers", "--crash", "--no-wal", "--parallel", "--rows")]
    [TestCase("inspect", "<handle>", "--procs", "--allocations", "--buffers", "--locks", "--dsm", "--json")]
    [TestCase("cleanup", "--dry-run", "--backend")]
    [TestCase("backends")]
    public void EachCommandHasItsOwnHelp(string command, params string[] mentions)
    {
        CliResult r = Cli.Run(command, "--help");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Stdout, Does.Contain($"pgipc {command}"), r.Stdout);
        foreach (string m in mentions)
            Assert.That(r.Stdout, Does.Contain(m), r.Stdout);
        // Another command's options are not in this one's help.
        if (command != "cleanup")
            Assert.That(r.Stdout, Does.Not.Contain("--dry-run"));
        Assert.That(Cli.Run("help", command).Stdout, Is.EqualTo(r.Stdout), "pgipc help <command> is the same");
    }

    [Test]
    public void InspectJsonParsesAndHasEveryView()
    {
        string dir = Directory.CreateTempSubdirectory("pgipc-clitest-").FullName;
        try
        {
            InspectJson(dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void InspectJson(string dir)
    {
        using Supervisor supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("clijson"))
            .WithPlatform(PgIpcPlatform.Current)
            .WithDataDirectory(dir)
            .WithBufferPool(16)
            .RequestNamedLWLockTranche("cli.test", 2)
            .Build();
        supervisor.Start();
        Cluster cluster = supervisor.Cluster;
        using Participant me = cluster.Procs.Join(ProcKind.Backend);
        string handle = cluster.Segment.Handle.ToString();
        CliResult r;
        using (LWLockTranches.GetNamedLWLockTranche(cluster.Segment, "cli.test")[1].Hold(me, LWLockMode.Exclusive))
            r = Cli.Run("inspect", handle, "--json");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        using JsonDocument doc = JsonDocument.Parse(r.Stdout);
        JsonElement root = doc.RootElement;

        JsonElement seg = root.GetProperty("segment");
        Assert.That(seg.GetProperty("id").GetString(), Is.EqualTo(cluster.Segment.Handle.Id));
        Assert.That(seg.GetProperty("creator_pid").GetInt32(), Is.EqualTo(Environment.ProcessId));
        Assert.That(seg.GetProperty("total_size").GetInt64(), Is.GreaterThan(0));

        JsonElement mine = root.GetProperty("procs").EnumerateArray().Single(p => p.GetProperty("proc_number").GetInt32() == me.ProcNumber);
        Assert.That(mine.GetProperty("pid").GetInt32(), Is.EqualTo(Environment.ProcessId));
        Assert.That(mine.GetProperty("kind").GetString(), Is.EqualTo("Backend"));
        Assert.That(mine.GetProperty("role").GetString(), Is.EqualTo("supervisor"), "the segment's creator");
        Assert.That(mine.TryGetProperty("wait_event", out _), Is.True);
        Assert.That(mine.GetProperty("held_lwlock_count").GetInt32(), Is.EqualTo(1));
        Assert.That(mine.GetProperty("held_lwlocks").EnumerateArray().Select(e => e.GetString()), Is.EqualTo(new[] { "LWLock cli.test[1]" }));

        Assert.That(root.GetProperty("allocations").EnumerateArray().Select(a => a.GetProperty("name").GetString()),
            Does.Contain(PgIpc.Buffers.BufferPool.DescriptorsName));
        JsonElement buffers = root.GetProperty("buffers");
        Assert.That(buffers.GetProperty("num_buffers").GetInt32(), Is.EqualTo(16));
        Assert.That(buffers.GetProperty("rows").ValueKind, Is.EqualTo(JsonValueKind.Array));
        Assert.That(root.GetProperty("locks").GetProperty("lock_capacity").GetInt32(), Is.GreaterThan(0));
        Assert.That(root.GetProperty("dsm").ValueKind, Is.EqualTo(JsonValueKind.Array));

        // One view asked for: only that one.
        CliResult procsOnly = Cli.Run("inspect", handle, "--procs", "--json");
        Assert.That(procsOnly.ExitCode, Is.EqualTo(0), procsOnly.ToString());
        using JsonDocument only = JsonDocument.Parse(procsOnly.Stdout);
        Assert.That(only.RootElement.TryGetProperty("procs", out _), Is.True);
        Assert.That(only.RootElement.TryGetProperty("buffers", out _), Is.False);
        Assert.That(only.RootElement.TryGetProperty("allocations", out _), Is.False);

        // The text views work too, and --procs names the wait event and the role.
        CliResult text = Cli.Run("inspect", handle, "--procs", "--dsm", "--locks", "--buffers", "--allocations");
        Assert.That(text.ExitCode, Is.EqualTo(0), text.ToString());
        Assert.That(text.Stdout, Does.Contain("supervisor").And.Contain("held lwlocks"));
    }

    /// <summary>A segment whose creator was killed and which nobody has attached: what `pgipc cleanup` removes.</summary>
    private (IPgIpcPlatform Platform, string Id) PlantStaleSegment()
    {
        IPgIpcPlatform platform = PgIpcPlatform.Current;
        ChildWorker child = Workers.Start(platform.Name, _children);
        ShmemHandle h = ShmemHandle.Parse(child.Send($"create {TestEnvironment.UniqueKey("clistale")} {Size}"));
        child.Kill();
        _planted.Add((platform, h.Id));
        Assert.That(platform.SharedMemory.QueryStatus(h.Id).Exists, Is.True, "the planted segment exists");
        return (platform, h.Id);
    }
}

internal sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>Runs the pgipc built beside the tests (or PGIPC_TEST_CLI), output redirected, bounded in time.</summary>
internal static class Cli
{
    private static readonly Lazy<string> s_path = new(Find);

    public static CliResult Run(params string[] args)
    {
        var psi = new ProcessStartInfo(s_path.Value) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(60_000))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"pgipc {string.Join(' ', args)} did not exit within 60 s");
        }
        return new CliResult(p.ExitCode, output, err.Result);
    }

    private static string Find()
    {
        if (Environment.GetEnvironmentVariable("PGIPC_TEST_CLI") is { Length: > 0 } given)
            return given;
        string config = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (!File.Exists(Path.Combine(d.FullName, "PgIpc.sln")))
                continue;
            foreach (string c in new[] { config, config == "Debug" ? "Release" : "Debug" })
            {
                string exe = Path.Combine(d.FullName, "src", "Cli", "bin", c, "net10.0", "pgipc");
                if (File.Exists(exe))
                    return exe;
            }
        }
        Assert.Fail($"pgipc was not found: build src/Cli (dotnet build PgIpc.sln), or set PGIPC_TEST_CLI (tests run from {AppContext.BaseDirectory})");
        return "";
    }
}

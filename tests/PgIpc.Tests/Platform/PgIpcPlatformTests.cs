/*-------------------------------------------------------------------------
 * PgIpcPlatformTests.cs
 *   Backend selection, process liveness (zombies on Linux), and the
 *   OS-level view of what a segment leaves.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Platform;

public sealed class PgIpcPlatformTests
{
    [Test]
    public void CurrentIsTheFirstSupportedBackendForThisOs()
    {
        IPgIpcPlatform current = PgIpcPlatform.Current;
        Assert.That(current.IsSupported, Is.True);
        string expected = OperatingSystem.IsLinux() ? "linux" : OperatingSystem.IsWindows() ? "windows" : "posix";
        if (Environment.GetEnvironmentVariable("PGIPC_BACKEND") is not { Length: > 0 })
            Assert.That(current.Name, Is.EqualTo(expected));
        Assert.That(PgIpcPlatform.Available().Select(p => p.Name), Does.Contain(current.Name));
    }

    [Test, OnlyOn(Os.Linux, "the posix backend is selectable beside linux only on Linux")]
    public void PosixCanBeChosenExplicitlyOnLinux()
    {
        Assert.That(PgIpcPlatform.Get("posix").Name, Is.EqualTo("posix"));
        Assert.That(PgIpcPlatform.Available().Select(p => p.Name), Is.EqualTo(new[] { "linux", "posix" }));
    }

    [Test]
    public void UnknownOrUnsupportedBackendsAreClearErrors()
    {
        Assert.Throws<ArgumentException>(() => PgIpcPlatform.Get("vms"));
        string unsupported = OperatingSystem.IsWindows() ? "linux" : "windows";
        var ex = Assert.Throws<PgIpcException>(() => PgIpcPlatform.Get(unsupported));
        Assert.That(ex!.Message, Does.Contain("not supported"));
    }

    [Test]
    public void ProcessLivenessSeesThisProcessAndNotAnImpossiblePid()
    {
        foreach (IPgIpcPlatform p in PgIpcPlatform.Available())
        {
            Assert.That(p.Processes.GetLiveness(Environment.ProcessId), Is.EqualTo(ProcessLiveness.Alive), p.Name);
            Assert.That(p.Processes.GetLiveness(0), Is.EqualTo(ProcessLiveness.Gone), p.Name);
            Assert.That(p.Processes.GetLiveness(-1), Is.EqualTo(ProcessLiveness.Gone), p.Name);
            Assert.That(p.Processes.GetLiveness(int.MaxValue - 7), Is.EqualTo(ProcessLiveness.Gone), p.Name);
        }
    }

    [Test, OnlyOn(Os.Linux, "zombies are told apart through /proc (linux and posix backends on Linux)")]
    public void AnExitedUnreapedChildIsAZombieAndNotAlive()
    {
        // sh starts a subshell, prints its pid, then execs `sleep`, which never waits for a child. The subshell exits
        // only once its parent has become that sleep (so the shell cannot reap it), and then stays a zombie.
        const string script = "(while [ \"$(cat /proc/$$/comm)\" != sleep ]; do sleep 0.01; done) & echo $!; exec sleep 60";
        var psi = new ProcessStartInfo("/bin/sh", ["-c", script]) { RedirectStandardOutput = true };
        using Process parent = Process.Start(psi)!;
        try
        {
            int child = int.Parse(parent.StandardOutput.ReadLine()!);
            foreach (string name in new[] { "linux", "posix" })
            {
                IProcessServices processes = PgIpcPlatform.Get(name).Processes;
                long deadline = Environment.TickCount64 + 30_000;
                ProcessLiveness seen;
                while ((seen = processes.GetLiveness(child)) == ProcessLiveness.Alive && Environment.TickCount64 < deadline)
                    Thread.Sleep(5);
                Assert.That(seen, Is.EqualTo(ProcessLiveness.Zombie), $"{name}: pid {child}, exited and not reaped by its parent {parent.Id}");
            }
            Assert.That(PgIpcPlatform.Get("linux").Processes.GetLiveness(parent.Id), Is.EqualTo(ProcessLiveness.Alive), "the sleeping parent");
        }
        finally
        {
            parent.Kill();
            parent.WaitForExit();
        }
    }

    [Test, OnlyOn(Os.Linux, "ipcs -m and /dev/shm with both the linux and posix backends")]
    public void IpcsAndDevShmAreBackWhereTheyStartedAfterCreateAndDestroy()
    {
        int sysv = OsObjects.SysVSegments(), shm = OsObjects.DevShmEntries();
        ShmemSegment a = ShmemSegment.Create(TestEnvironment.UniqueKey("ipcs"), 1 << 20, PgIpcPlatform.Get("linux"));
        ShmemSegment b = ShmemSegment.Create(TestEnvironment.UniqueKey("devshm"), 1 << 20, PgIpcPlatform.Get("posix"));
        Assert.That(OsObjects.SysVSegments(), Is.EqualTo(sysv + 1), "ipcs -m shows the SysV segment");
        Assert.That(OsObjects.DevShmEntries(), Is.EqualTo(shm + 1), "/dev/shm shows the POSIX segment");
        a.Destroy();
        b.Destroy();
        Assert.That(OsObjects.SysVSegments(), Is.EqualTo(sysv));
        Assert.That(OsObjects.DevShmEntries(), Is.EqualTo(shm));
    }
}

/*-------------------------------------------------------------------------
 * SignalIdentityTests.cs
 *   Interrupts reach only the process that registered for them: a slot's
 *   pid that the OS has since given to an unrelated process is not
 *   signalled (its identity, the start time, no longer matches), and a
 *   process that was interruptible once keeps a harmless SIGUSR1 handler
 *   after it detached, so a late interrupt cannot kill it.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Signals;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Signals;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class SignalIdentityTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<ChildWorker> _workers = [];
    private LockCluster? _c;
    private Process? _bystander;

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        if (_bystander is { } b)
        {
            try
            {
                if (!b.HasExited)
                    b.Kill();
                b.WaitForExit(10_000);
            }
            catch (InvalidOperationException)
            {
            }
            b.Dispose();
            _bystander = null;
        }
        _c?.Dispose();
        _c = null;
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int sig);

    private const int SIGUSR1 = 10; // Linux

    [Test, OnlyOn(Os.Linux, "a process's identity is its start time in /proc/<pid>/stat")]
    public void AnInterruptForASlotWhosePidWasReusedReachesNobody()
    {
        _c = LockCluster.Create(_platform);
        ProcArray procs = _c.Procs;
        _bystander = Process.Start(new ProcessStartInfo("sleep", "60") { UseShellExecute = false })!;
        int slot = procs.MaxProcs - 1; // free: nobody joined
        PgProc* p = procs.Procs + slot;
        long real = _platform.Processes.GetIdentity(_bystander.Id);
        Assert.That(real, Is.Not.Zero, "the backend tells processes apart");
        try
        {
            // As a participant that died left its slot (dead holders' slots are kept on purpose), after the OS gave
            // its pid to an unrelated process: the pid matches, the identity recorded at join does not.
            p->PidIdentity = real + 1;
            Volatile.Write(ref p->Pid, _bystander.Id);
            Assert.That(ProcSignal.SendProcSignal(procs, slot, ProcSignalReason.Notify), Is.False, "refused: not the process that joined");
            Assert.That(_bystander.WaitForExit(1000), Is.False, "the unrelated process got no SIGUSR1 (its default action would end it)");

            // Control: the same slot naming that process as it is. The signal goes, and SIGUSR1's default action
            // ends a process that never listened, which is what the check above spared it.
            p->PidIdentity = real;
            Assert.That(ProcSignal.SendProcSignal(procs, slot, ProcSignalReason.Notify), Is.True);
            Assert.That(_bystander.WaitForExit(30_000), Is.True, "a process that never listened dies of SIGUSR1");
        }
        finally
        {
            Volatile.Write(ref p->Pid, 0);
            p->PidIdentity = 0;
            Interlocked.Exchange(ref p->ProcSignalFlags, 0);
        }
    }

    [Test, OnlyOn(Os.Linux, "a process's identity is its start time in /proc/<pid>/stat")]
    public void TheBackendSignalsAPidOnlyWhenItIsStillTheProcessNamed()
    {
        // The backend's own check (Linux: pidfd_open, the identity, pidfd_send_signal on the pinned process), as
        // ProcSignal and PMSignal call it.
        _bystander = Process.Start(new ProcessStartInfo("sleep", "60") { UseShellExecute = false })!;
        long real = _platform.Processes.GetIdentity(_bystander.Id);
        Assert.That(real, Is.Not.Zero);
        Assert.That(_platform.Latches.Interrupt("pgipc.test", _bystander.Id, real + 1, _platform.Processes), Is.False);
        Assert.That(_bystander.WaitForExit(1000), Is.False, "another process's identity: no signal");
        Assert.That(_platform.Latches.Interrupt("pgipc.test", _bystander.Id, real, _platform.Processes), Is.True);
        Assert.That(_bystander.WaitForExit(30_000), Is.True, "the process named: SIGUSR1 (whose default action ends it)");
        Assert.That(_platform.Latches.Interrupt("pgipc.test", _bystander.Id, real, _platform.Processes), Is.False, "gone: nothing to signal");
    }

    [Test, OnlyOn(Os.Unix, "SIGUSR1 is the Unix backends' interrupt")]
    public void AProcessThatDetachedSurvivesALateInterrupt()
    {
        _c = LockCluster.Create(_platform);
        ChildWorker w = Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");
        w.Send("lw-join");
        w.Send("lw-leave");
        w.Send("detach"); // the segment, its slot array and its interrupt listener are gone from the worker
        // A sender that read the worker's pid from a slot before it left now interrupts it.
        Assert.That(SysKill(w.Pid, SIGUSR1), Is.Zero);
        // Still alive and answering: SIGUSR1's default action (terminate) did not happen.
        Assert.That(w.Send("pid"), Is.EqualTo(w.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }
}

/*-------------------------------------------------------------------------
 * PidReuseTests.cs
 *   "A reused pid hides a death" (issue 13, item 7): a participant that
 *   dies leaves its pid in its slot; once the OS hands that pid to an
 *   unrelated process, the slot's owner still looks alive to a bare
 *   kill(pid, 0). The slot's recorded identity (start time) tells them
 *   apart: the dead slot is reclaimed, and a waiter on an LWLock the dead
 *   owner held gets LockHolderDiedException instead of waiting forever.
 *
 *   Two ways to reuse the pid: by rewriting the dead slot's pid to an
 *   unrelated process's (any user), and for real, by steering the kernel's
 *   next pid to the dead one through /proc/sys/kernel/ns_last_pid (root).
 *
 *   The waiter runs on a thread bounded by a join: before the fix it waited
 *   for the "live" holder forever and the join failed.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;
using PgIpc.Tests.Shmem;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Proc;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
[OnlyOn(Os.Linux, "a process's identity is its start time in /proc/<pid>/stat; other backends' hosts cannot tell")]
public sealed unsafe class PidReuseTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<ChildWorker> _workers = [];
    private readonly List<Process> _bystanders = [];
    private LockCluster _c = null!;

    [SetUp]
    public void SetUp() => _c = LockCluster.Create(_platform);

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        foreach (Process b in _bystanders)
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
        }
        _bystanders.Clear();
        Participant.CurrentOrNull?.Dispose();
        _c.Dispose();
    }

    private Process StartBystander()
    {
        Process b = Process.Start(new ProcessStartInfo("sleep", "120") { UseShellExecute = false })!;
        _bystanders.Add(b);
        return b;
    }

    /// <summary>A worker that joins and takes LWLock <paramref name="lockIndex"/> exclusively, killed while it holds it.</summary>
    private (int Pid, int ProcNumber) KillAHolder(int lockIndex)
    {
        ChildWorker victim = Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");
        int procno = int.Parse(victim.Send($"lw-hold {lockIndex} exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        int pid = victim.Pid;
        victim.Kill(); // SIGKILL, and reaped: the pid is free for the OS to hand out again
        return (pid, procno);
    }

    /// <summary>A participant thread here that acquires the lock; returns what ended its wait (null: it got the lock).</summary>
    private Exception? AcquireOnAThread(int lockIndex)
    {
        Exception? error = null;
        bool acquired = false;
        var t = new Thread(() =>
        {
            try
            {
                using Participant me = _c.Procs.Join();
                _c.Locks[lockIndex].Acquire(me, LWLockMode.Exclusive);
                acquired = true;
                _c.Locks[lockIndex].Release(me);
            }
            catch (Exception ex)
            {
                error = ex;
            }
        }) { IsBackground = true, Name = "pid-reuse waiter" };
        t.Start();
        Assert.That(t.Join(Patience), Is.True, "the waiter was released instead of waiting for a holder that looks alive");
        Assert.That(acquired, Is.False, "the waiter did not get a lock whose holder died");
        return error;
    }

    [Test]
    public void ADeadSlotWhosePidNowNamesAnotherProcessIsReclaimed()
    {
        // A participant that died without holding anything, whose pid the OS then gave to an unrelated process.
        ChildWorker victim = Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");
        int procno = int.Parse(victim.Send("lw-join"), CultureInfo.InvariantCulture);
        victim.Kill();
        Process bystander = StartBystander();
        PgProc* p = _c.Procs.Procs + procno;
        Volatile.Write(ref p->Pid, bystander.Id); // the reused pid; the identity recorded at join stays the victim's

        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.EqualTo(1), "the slot of the dead owner is given back");
        Assert.That(_c.Procs.GetProcs().Any(i => i.ProcNumber == procno), Is.False);
        Assert.That(bystander.HasExited, Is.False, "the unrelated process is untouched");
    }

    [Test]
    public void ALiveSlotOwnerIsNotMistakenForAReusedPid()
    {
        // Control for the tests above and below: the identity check must not make a live participant look dead.
        ChildWorker alive = Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");
        int procno = int.Parse(alive.Send("lw-join"), CultureInfo.InvariantCulture);
        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.Zero);
        Assert.That(_c.Procs.GetProcs().Single(i => i.ProcNumber == procno).Pid, Is.EqualTo(alive.Pid));
        Assert.That(_c.Procs.IsSlotOwnerGone(_c.Procs.Procs + procno, alive.Pid), Is.False);
    }

    [Test]
    public void AWaiterOnALockWhoseDeadHoldersPidWasReusedGetsTheException()
    {
        (_, int procno) = KillAHolder(4);
        Process bystander = StartBystander();
        Volatile.Write(ref _c.Procs.Procs[procno].Pid, bystander.Id);

        Exception? error = AcquireOnAThread(4);
        Assert.That(error, Is.TypeOf<LockHolderDiedException>(), $"the waiter's error: {error}");
        var died = (LockHolderDiedException)error!;
        Assert.That(died.DeadProcNumber, Is.EqualTo(procno));
        Assert.That(died.DeadPid, Is.EqualTo(bystander.Id), "the pid the slot names");
        Assert.That(bystander.HasExited, Is.False);
    }

    [Test, OnlyAsRootOnLinux]
    public void AWaiterOnALockWhoseHoldersPidTheKernelGaveToANewProcessGetsTheException()
    {
        (int deadPid, int procno) = KillAHolder(5);
        Process reuser = ReusePid(deadPid);
        Assert.That(_platform.Processes.GetLiveness(deadPid), Is.EqualTo(ProcessLiveness.Alive), "the dead holder's pid names a live process now");

        Exception? error = AcquireOnAThread(5);
        Assert.That(error, Is.TypeOf<LockHolderDiedException>(), $"the waiter's error: {error}");
        Assert.That(((LockHolderDiedException)error!).DeadPid, Is.EqualTo(deadPid));
        Assert.That(((LockHolderDiedException)error!).DeadProcNumber, Is.EqualTo(procno));
        Assert.That(reuser.HasExited, Is.False, "the process that has the pid now is untouched");
    }

    /// <summary>Starts processes until one gets <paramref name="pid"/>, steering the kernel's next pid (root only).</summary>
    private Process ReusePid(int pid)
    {
        const string lastPid = "/proc/sys/kernel/ns_last_pid";
        for (int attempt = 0; attempt < 200; attempt++)
        {
            File.WriteAllText(lastPid, (pid - 1).ToString(CultureInfo.InvariantCulture));
            Process b = StartBystander();
            if (b.Id == pid)
                return b;
            // Another fork or thread of this machine took it first: try again.
        }
        Assert.Fail($"no new process got pid {pid} in 200 attempts through {lastPid}");
        return null!;
    }
}

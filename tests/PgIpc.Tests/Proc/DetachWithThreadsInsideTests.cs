/*-------------------------------------------------------------------------
 * DetachWithThreadsInsideTests.cs
 *   Issue 13, item 9: memory is never unmapped under a thread still using
 *   it. A cluster shut down (or crash-restarted) in a process where other
 *   threads' participants are inside the segment asks them to leave: a
 *   sleeper on an LWLock is woken with ObjectDisposedException, a worker
 *   that checks LeaveRequested releases and leaves, and the detach then
 *   completes. A thread that never calls into PgIpc is waited for a grace
 *   period; then the detach is reported, the OS object is removed, and the
 *   memory stays mapped in this process until that thread's participant
 *   is disposed, when it is unmapped.
 *
 *   Each scenario runs inside a worker process: before the fix the worker
 *   died of an access violation, which the test sees as the worker exiting
 *   in the middle of the command.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;

namespace PgIpc.Tests.Proc;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class DetachWithThreadsInsideTests(string backend)
{
    private readonly List<ChildWorker> _workers = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
    }

    [Test]
    public void ThreadsThatNoticeTheLeaveRequestUnwindAndTheDetachCompletes()
    {
        ChildWorker w = Workers.Start(backend, _workers);
        string reply = w.Send("detach-cooperative", TimeSpan.FromSeconds(90));
        Assert.That(reply, Is.EqualTo("sleeper=ObjectDisposedException lockwaiter=ObjectDisposedException holder=left mapped=False log=clean"),
            "the LWLock and heavyweight-lock sleepers left their queues with ObjectDisposedException, the holder released and left, nothing stayed mapped");
        Assert.That(w.Send("pid"), Is.EqualTo(w.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)), "the worker is alive");
    }

    [Test]
    public void AThreadThatStaysInsideKeepsTheMemoryMappedUntilItLeaves()
    {
        ChildWorker w = Workers.Start(backend, _workers);
        string reply = w.Send("detach-straggler", TimeSpan.FromSeconds(90));
        Assert.That(reply, Is.EqualTo("error=reported held=True ran=True released=True"),
            "the detach reported the straggler, kept the memory mapped while it ran, and unmapped it once it left");
        Assert.That(w.Send("pid"), Is.EqualTo(w.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)), "the worker is alive");
    }

    [Test]
    public void QueueHandlesDisposedAfterTheirClusterWasShutDownOnlyForgetTheirSide()
    {
        ChildWorker w = Workers.Start(backend, _workers);
        Assert.That(w.Send("detach-mq-after-shutdown", TimeSpan.FromSeconds(90)), Is.EqualTo("disposed"));
        Assert.That(w.Send("pid"), Is.EqualTo(w.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)), "the worker is alive");
    }
}

/*-------------------------------------------------------------------------
 * StaleLeftoversTests.cs
 *   A creator killed with SIGKILL leaves its segment's other OS objects
 *   behind (named semaphores, latch FIFOs); the next Create of the same
 *   key, given the cluster layer's stale-segment handler, removes them
 *   with the stale segment.
 *
 * NOTES
 *   Posix backend on Linux only: the backend whose objects have names in
 *   the file system (/dev/shm/sem.pgipc.*, <temp>/pgipc.<set>/). The
 *   semaphores are made in named mode (the macOS path) so that there is
 *   something to leave behind; the creator is one test worker, killed.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Postmaster;
using PgIpc.Shmem;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Shmem;

public sealed class StaleLeftoversTests
{
    [Test, OnlyOn(Os.Linux, "the names checked live in /dev/shm and the temp directory of the posix backend on Linux")]
    public void NamedSemaphoresAndLatchFifosOfAKilledCreatorAreRemovedByTheNextCreate()
    {
        var platform = new NamedSemaphorePosixPlatform();
        string key = TestEnvironment.UniqueKey("stale-named");
        ShmemHandle old;
        using (ChildWorker w = ChildWorker.Start("posix"))
        {
            old = ShmemHandle.Parse(w.Send($"pm-named-procs {key}"));
            w.Kill(); // SIGKILL: nothing is destroyed
        }
        string set = "l" + old.Cookie.ToString("x16");
        string[] sems = Directory.GetFiles("/dev/shm", $"sem.pgipc.{set}.*");
        string latchDir = Path.Combine(Path.GetTempPath(), "pgipc." + set);
        int slots = NamedSemaphorePosixPlatform.Options.TotalProcs;
        Assert.That(sems, Has.Length.EqualTo(slots), "the killed creator left its named semaphores");
        Assert.That(Directory.GetFileSystemEntries(latchDir), Has.Length.EqualTo(slots + 1), "and its latch FIFOs and lifeline");

        ShmemSegment seg = ShmemSegment.Create(key, NamedSemaphorePosixPlatform.Sizes(), platform, ClusterLeftovers.Instance);
        try
        {
            Assert.That(seg.Handle.Cookie, Is.Not.EqualTo(old.Cookie));
            Assert.That(seg.LeftoversRemoved, Is.EqualTo(2), "the latch set and the semaphore set");
            Assert.That(Directory.GetFiles("/dev/shm", $"sem.pgipc.{set}.*"), Is.Empty);
            Assert.That(Directory.Exists(latchDir), Is.False);
        }
        finally
        {
            seg.Destroy();
        }
        Assert.That(platform.SharedMemory.QueryStatus(seg.Handle.Id).Exists, Is.False);
    }
}

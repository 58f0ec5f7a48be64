/*-------------------------------------------------------------------------
 * PosixUnfinishedCreationTests.cs
 *   The posix backend's object of a creation that did not finish: a
 *   creator that died before sizing it (a 0-byte or too-small object) is
 *   removed by the next Create and listed (and removed) by cleanup; a
 *   creator still at work (it holds the creation lock, here before and
 *   after sizing, header not yet written) is never judged stale: Create
 *   refuses with SharedMemoryInUseException and cleanup leaves it alone,
 *   and once the lock goes things recover.
 *
 * NOTES
 *   The unfinished object is made by hand under the name the backend gives
 *   the key (CandidateIds of the key's hash): /dev/shm/<name>. The live
 *   creator is simulated with a FileStream opened FileShare.None, which on
 *   Linux takes flock(LOCK_EX) on the open file description, the same lock
 *   the backend's creator holds (PosixSharedMemory.cs notes); disposing it
 *   is the creator's death. One test puts that creator in a child process
 *   (worker command shm-creating) and kills it with SIGKILL, as a real
 *   creator dies. Linux only: the objects are files in /dev/shm.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Shmem;

public sealed class PosixUnfinishedCreationTests
{
    private const long Size = 1 << 20;
    private IPgIpcPlatform _platform = null!;
    private readonly List<string> _paths = [];
    private readonly List<IDisposable> _locks = [];
    private readonly List<ShmemSegment> _segments = [];

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get("posix");

    [TearDown]
    public void TearDown()
    {
        foreach (IDisposable l in _locks)
            l.Dispose();
        foreach (ShmemSegment s in _segments)
            if (s.IsAttached)
                s.Destroy();
        foreach (string p in _paths)
            File.Delete(p);
    }

    /// <summary>The /dev/shm path of the posix object the backend would create for <paramref name="key"/>.</summary>
    private string PathFor(string key, out string id)
    {
        id = _platform.SharedMemory.CandidateIds(ShmemSegment.HashKey(key)).First();
        string path = "/dev/shm/" + id[1..];
        _paths.Add(path);
        return path;
    }

    /// <summary>An object of <paramref name="length"/> bytes whose creator died (no lock held).</summary>
    private void Leftover(string path, long length)
    {
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        fs.SetLength(length);
    }

    /// <summary>An object whose creator is alive and still creating it: the creation lock is held until disposed.</summary>
    private FileStream LiveCreator(string path)
    {
        var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None); // flock(LOCK_EX) on Linux
        _locks.Add(fs);
        return fs;
    }

    private ShmemSegment Create(string key)
    {
        ShmemSegment seg = ShmemSegment.Create(key, Size, _platform);
        _segments.Add(seg);
        return seg;
    }

    [TestCase(0L)]
    [TestCase(100L)]
    [OnlyOn(Os.Linux, "posix shm objects are files in /dev/shm on Linux only")]
    public void CreateRemovesTheObjectOfACreatorThatDiedBeforeWritingAnything(long length)
    {
        string key = TestEnvironment.UniqueKey("unfinished-dead");
        string path = PathFor(key, out string id);
        Leftover(path, length);

        ShmemSegment seg = Create(key);

        Assert.That(seg.Handle.Id, Is.EqualTo(id));
        Assert.That(seg.ReplacedStaleSegment, Is.True);
        Assert.That(new FileInfo(path).Length, Is.EqualTo(Size));
    }

    [Test, OnlyOn(Os.Linux, "posix shm objects are files in /dev/shm on Linux only")]
    public void CleanupListsAndRemovesAnEmptyObjectOfADeadCreator()
    {
        string key = TestEnvironment.UniqueKey("unfinished-cleanup");
        string path = PathFor(key, out string id);
        Leftover(path, 0);

        StaleSegmentReport? listed = ShmemSegment.CleanupStale(_platform, dryRun: true).SingleOrDefault(r => r.Id == id);
        Assert.That(listed, Is.Not.Null, "a dry run lists the empty object");
        Assert.That(listed!.Verdict, Is.EqualTo(StaleVerdict.Stale));
        Assert.That(listed.Removed, Is.False);
        Assert.That(File.Exists(path), Is.True, "a dry run removes nothing");

        StaleSegmentReport? removed = ShmemSegment.CleanupStale(_platform).SingleOrDefault(r => r.Id == id);
        Assert.That(removed, Is.Not.Null);
        Assert.That(removed!.Verdict, Is.EqualTo(StaleVerdict.Stale));
        Assert.That(removed.Removed, Is.True);
        Assert.That(File.Exists(path), Is.False);
    }

    [TestCase(false)]
    [TestCase(true)]
    [OnlyOn(Os.Linux, "posix shm objects are files in /dev/shm on Linux only")]
    public void CreateRefusesWhileALiveCreatorHoldsTheCreationLockAndRecoversAfter(bool sized)
    {
        string key = TestEnvironment.UniqueKey("unfinished-live");
        string path = PathFor(key, out string id);
        FileStream creator = LiveCreator(path);
        if (sized)
            creator.SetLength(Size); // past ftruncate, in posix_fallocate: header still zero

        var ex = Assert.Throws<SharedMemoryInUseException>(() => Create(key));
        StringAssert.Contains(id, ex!.Message);
        Assert.That(File.Exists(path), Is.True, "a live creator's object is never removed");
        Assert.That(new FileInfo(path).Length, Is.EqualTo(sized ? Size : 0));

        StaleSegmentReport? listed = ShmemSegment.CleanupStale(_platform).SingleOrDefault(r => r.Id == id);
        Assert.That(listed, Is.Not.Null);
        Assert.That(listed!.Verdict, Is.EqualTo(StaleVerdict.InUse));
        Assert.That(listed.Removed, Is.False);
        Assert.That(File.Exists(path), Is.True, "cleanup leaves a live creator's object alone");

        creator.Dispose(); // the creator dies: its lock goes with it
        ShmemSegment seg = Create(key);
        Assert.That(seg.Handle.Id, Is.EqualTo(id));
        Assert.That(seg.ReplacedStaleSegment, Is.True);
    }

    [Test, OnlyOn(Os.Linux, "posix shm objects are files in /dev/shm on Linux only")]
    public void ACreatorProcessKilledWhileCreatingIsInUseUntilItDiesThenReplaced()
    {
        string key = TestEnvironment.UniqueKey("unfinished-killed");
        string path = PathFor(key, out string id);
        using (ChildWorker w = ChildWorker.Start("posix"))
        {
            w.Send($"shm-creating {path} {Size}"); // fails the test unless the worker answers ok

            Assert.Throws<SharedMemoryInUseException>(() => Create(key));
            Assert.That(new FileInfo(path).Length, Is.EqualTo(Size), "the live creator's object is left alone");

            w.Kill(); // SIGKILL in the middle of "creation": the kernel drops its lock
        }
        ShmemSegment seg = Create(key);
        Assert.That(seg.Handle.Id, Is.EqualTo(id));
        Assert.That(seg.ReplacedStaleSegment, Is.True);
    }

    [Test, OnlyOn(Os.Linux, "posix shm objects are files in /dev/shm on Linux only")]
    public void AFinishedSegmentNoLongerHoldsTheCreationLock()
    {
        string key = TestEnvironment.UniqueKey("unfinished-done");
        string path = PathFor(key, out _);
        ShmemSegment seg = Create(key);
        // The lock is released once the header is written: nothing keeps another opener from locking it.
        using (new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None))
        {
        }
        var ex = Assert.Throws<SharedMemoryInUseException>(() => ShmemSegment.Create(key, Size, _platform));
        Assert.That(ex!.Pid, Is.EqualTo(Environment.ProcessId));
        seg.Destroy();
        Assert.That(File.Exists(path), Is.False);
    }
}

/// <summary>
/// Worker command shm-creating PATH SIZE: a creator stopped in the middle of creation, as a process: the object made
/// exclusively, flock(LOCK_EX) held (FileShare.None), sized, header never written. Held until the worker dies.
/// </summary>
internal static class PosixCreationWorkerCommands
{
    private static FileStream? s_creating;

    public static bool TryExecute(string[] a, out string reply)
    {
        reply = "";
        if (a[0] != "shm-creating")
            return false;
        var fs = new FileStream(a[1], FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        fs.SetLength(long.Parse(a[2], System.Globalization.CultureInfo.InvariantCulture));
        s_creating = fs;
        reply = "ok";
        return true;
    }
}

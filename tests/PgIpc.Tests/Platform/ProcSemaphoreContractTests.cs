/*-------------------------------------------------------------------------
 * ProcSemaphoreContractTests.cs
 *   The PGSemaphore contract (IProcSemaphoreProvider / IProcSemaphoreSet)
 *   every backend must pass: counting, timeouts, reset, wake-ups between
 *   threads and between processes, no lost wake-up over many round trips,
 *   bad arguments, and nothing left behind after Destroy.
 *
 * NOTES
 *   The fixture runs once per backend, and once more for the posix
 *   backend's named-semaphore mode ("posix-named", the macOS path), forced
 *   on Linux. Storage comes from a real segment, one structure per set with
 *   stride ProcSemaphoreStorage.MaxSize, as PGPROC slots will give it.
 *   Blocking calls are timed (10 s) so a lost wake-up fails a test instead
 *   of hanging the run, except the two that test the untimed Lock: one
 *   posts first, the other runs it on its own thread joined with a timeout.
 *   No test asserts a duration. Tests that do not apply to a variant are
 *   reported skipped, decided at discovery ([NamedOnly], SkipAtDiscovery.cs).
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Platform.Posix;
using PgIpc.Shmem;
using PosixLibC = PgIpc.Platform.Posix.Interop.LibC;
using WinApi = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Tests.Platform;

[TestFixtureSource(nameof(Variants))]
public sealed class ProcSemaphoreContractTests(string variant)
{
    private const int Stride = ProcSemaphoreStorage.MaxSize;
    private const int Wait = 10_000;
    private static int s_counter;

    private readonly string _backend = variant == PosixNamed ? "posix" : variant;
    private IPgIpcPlatform _platform = null!;
    private IProcSemaphoreProvider _provider = null!;
    private ShmemSegment _segment = null!;
    private readonly List<IProcSemaphoreSet> _created = [];
    private readonly List<IProcSemaphoreSet> _attached = [];
    private readonly List<ChildWorker> _children = [];

    private const string PosixNamed = "posix-named";

    /// <summary>Every backend on this machine, plus the posix backend's named mode where posix runs.</summary>
    public static IEnumerable<string> Variants()
        => TestEnvironment.Backends().SelectMany(b => b == "posix" ? new[] { b, PosixNamed } : [b]);

    /// <summary>True when the semaphores are named OS objects (Create can collide, Destroy removes names).</summary>
    private bool Named => IsNamed(variant);

    /// <summary>Whether <paramref name="v"/>'s semaphores are named OS objects (no storage in the slot).</summary>
    private static bool IsNamed(string v) => v is PosixNamed or "windows" || PgIpcPlatform.Get(v).Semaphores.StorageSize == 0;

    /// <summary>Tests of what only named semaphores do: skipped (at discovery) for the variants without names.</summary>
    private sealed class NamedOnlyAttribute() : OnlyForVariantsAttribute("no names: the storage is the caller's to keep apart")
    {
        public override bool AppliesTo(string variant) => IsNamed(variant);
    }

    [SetUp]
    public void SetUp()
    {
        _platform = PgIpcPlatform.Get(_backend);
        _provider = variant == PosixNamed ? new PosixSemaphoreProvider(forceNamed: true) : _platform.Semaphores;
        _segment = ShmemSegment.Create(TestEnvironment.UniqueKey("sem"), 1 << 20, _platform);
    }

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        foreach (IProcSemaphoreSet s in _attached)
            s.Dispose();
        _attached.Clear();
        foreach (IProcSemaphoreSet s in _created)
        {
            try { s.Destroy(); }
            catch (ObjectDisposedException) { } // the test destroyed it itself
        }
        _created.Clear();
        _segment.Destroy();
    }

    /// <summary>A set name no other test uses: "t&lt;pid&gt;.&lt;n&gt;.&lt;4 hex&gt;" (at most 22 characters).</summary>
    private static string NewName()
        => $"t{Environment.ProcessId}.{Interlocked.Increment(ref s_counter)}.{Guid.NewGuid().ToString("N")[..4]}";

    private static string StructName(string name) => "sem." + name;

    /// <summary>
    /// The storage address of a set's structure in this process's mapping (created when missing). Room for
    /// at least 8 semaphores, so tests that use one name with different counts find the same structure.
    /// </summary>
    private unsafe nint Storage(string name, int count)
        => (nint)_segment.InitStruct(StructName(name), (long)Stride * Math.Max(count, 8), out _).Pointer;

    private IProcSemaphoreSet Create(int count, string? name = null)
    {
        name ??= NewName();
        IProcSemaphoreSet set = _provider.Create(name, Storage(name, count), Stride, count);
        _created.Add(set);
        return set;
    }

    private IProcSemaphoreSet Attach(string name, int count)
    {
        IProcSemaphoreSet set = _provider.Attach(name, Storage(name, count), Stride, count);
        _attached.Add(set);
        return set;
    }

    private ChildWorker ChildAttachedTo(string name, int count)
    {
        ChildWorker c = Workers.StartAttached(_backend, _children, _segment.Handle);
        Storage(name, count); // the structure exists before the child looks for it
        c.Send($"sem-attach {name} {StructName(name)} {count}{(variant == PosixNamed ? " named" : "")}");
        return c;
    }

    /// <summary>Named semaphores glibc keeps in /dev/shm for PgIpc (empty elsewhere).</summary>
    private static HashSet<string> DevShmSemaphores()
        => OperatingSystem.IsLinux() && Directory.Exists("/dev/shm")
            ? [.. Directory.GetFiles("/dev/shm", "sem.pgipc.*")]
            : [];

    [Test]
    public void StorageSizeFitsTheReservation()
    {
        int expected = variant switch { "linux" => 4, "posix" => 32, _ => 0 };
        Assert.That(_provider.StorageSize, Is.EqualTo(expected));
        Assert.That(_provider.StorageSize, Is.InRange(0, ProcSemaphoreStorage.MaxSize));
    }

    [Test]
    public void UnlockThenLockDoesNotBlock()
    {
        IProcSemaphoreSet s = Create(2);
        Assert.That(s.Count, Is.EqualTo(2));
        s.Unlock(0);
        s.Lock(0); // the count was 1: returns at once
        s.Unlock(1);
        Assert.That(s.Lock(1, Wait), Is.True);
        Assert.That(s.TryLock(0), Is.False);
        Assert.That(s.TryLock(1), Is.False);
    }

    [Test]
    public void TryLockOnZeroReturnsFalse()
    {
        IProcSemaphoreSet s = Create(4);
        for (int i = 0; i < s.Count; i++)
            Assert.That(s.TryLock(i), Is.False, $"semaphore {i} starts at zero");
    }

    [Test]
    public void TimedLockOnZeroTimesOut()
    {
        IProcSemaphoreSet s = Create(1);
        Assert.That(s.Lock(0, 50), Is.False);
        Assert.That(s.Lock(0, 0), Is.False);
        s.Unlock(0);
        Assert.That(s.Lock(0, 0), Is.True, "a zero timeout still takes an available unit");
        Assert.That(s.TryLock(0), Is.False);
    }

    [Test]
    public void TheTimedWaitIsNativeExceptOnMacOS()
    {
        // LWLock sleepers wait in timed slices (to look for a dead holder) only where this is true.
        IProcSemaphoreSet s = Create(1);
        Assert.That(s.HasNativeTimedWait, Is.EqualTo(!OperatingSystem.IsMacOS()));
    }

    [Test]
    public void UnlocksAccumulateAndSemaphoresAreIndependent()
    {
        IProcSemaphoreSet s = Create(3);
        for (int i = 0; i < 3; i++)
            s.Unlock(1);
        Assert.That(s.TryLock(0), Is.False);
        Assert.That(s.TryLock(2), Is.False);
        for (int i = 0; i < 3; i++)
            Assert.That(s.TryLock(1), Is.True, $"unit {i + 1} of 3");
        Assert.That(s.TryLock(1), Is.False, "a fourth TryLock finds nothing");
    }

    [Test]
    public void ResetDrainsTheCount()
    {
        IProcSemaphoreSet s = Create(3);
        for (int i = 0; i < 5; i++)
            s.Unlock(2);
        s.Unlock(1);
        s.Reset(2);
        Assert.That(s.TryLock(2), Is.False);
        s.Reset(0); // already zero
        Assert.That(s.TryLock(0), Is.False);
        Assert.That(s.TryLock(1), Is.True, "Reset of one semaphore leaves the others");
        s.Unlock(2);
        Assert.That(s.TryLock(2), Is.True, "usable after Reset");
    }

    [Test]
    public void AThreadBlockedInLockIsWokenByAnotherThreadsUnlock()
    {
        IProcSemaphoreSet s = Create(2);
        bool woke = false;
        var sleeper = new Thread(() =>
        {
            s.Lock(1);
            Volatile.Write(ref woke, true);
        }) { IsBackground = true };
        sleeper.Start();
        Thread.Sleep(20); // most likely asleep in the OS by now; the test passes either way
        s.Unlock(1);
        bool joined = sleeper.Join(Wait);
        if (!joined)
            s.Unlock(1); // let it go before failing
        Assert.That(joined, Is.True, "the sleeper was woken");
        Assert.That(Volatile.Read(ref woke), Is.True);
        Assert.That(s.TryLock(1), Is.False, "the sleeper took the only unit");
    }

    [Test]
    public void PingPongBetweenTwoThreadsLosesNoWakeUp()
    {
        IProcSemaphoreSet s = Create(2);
        int rounds = variant == "windows" ? 2_000 : 10_000; // every Windows wait is a wineserver round trip under Wine
        TestThreads.Run(2, t =>
        {
            for (int i = 0; i < rounds; i++)
            {
                if (t == 0)
                {
                    s.Unlock(0);
                    if (!s.Lock(1, Wait))
                        throw new TimeoutException($"round {i}: pong lost");
                }
                else
                {
                    if (!s.Lock(0, Wait))
                        throw new TimeoutException($"round {i}: ping lost");
                    s.Unlock(1);
                }
            }
        });
        Assert.That(s.TryLock(0), Is.False);
        Assert.That(s.TryLock(1), Is.False);
    }

    [Test]
    public void UnlocksFromManyThreadsAreAllCounted()
    {
        IProcSemaphoreSet s = Create(1);
        const int threads = 4, each = 1_000;
        int taken = 0;
        TestThreads.Run(threads + 1, t =>
        {
            if (t < threads)
            {
                for (int i = 0; i < each; i++)
                    s.Unlock(0);
                return;
            }
            for (int i = 0; i < threads * each; i++)
            {
                if (!s.Lock(0, Wait))
                    throw new TimeoutException($"unit {i} of {threads * each} never arrived");
                taken++;
            }
        });
        Assert.That(taken, Is.EqualTo(threads * each));
        Assert.That(s.TryLock(0), Is.False);
    }

    [Test]
    public void ASecondViewInThisProcessSharesTheSemaphores()
    {
        string name = NewName();
        IProcSemaphoreSet a = Create(2, name);
        IProcSemaphoreSet b = Attach(name, 2);
        b.Unlock(1);
        Assert.That(a.TryLock(1), Is.True);
        a.Unlock(0);
        Assert.That(b.Lock(0, Wait), Is.True);
        b.Dispose();
        a.Unlock(0);
        Assert.That(a.TryLock(0), Is.True, "disposing a view leaves the set working");
    }

    [Test]
    public void ChildProcessWakesParentAndParentWakesChild()
    {
        string name = NewName();
        IProcSemaphoreSet s = Create(2, name);
        ChildWorker child = ChildAttachedTo(name, 2);

        child.Send("sem-unlock 0");
        Assert.That(s.Lock(0, Wait), Is.True, "the child's post reached the parent");

        child.Begin($"sem-lock 1 {Wait}");
        Thread.Sleep(20); // the child is most likely asleep by now; the test passes either way
        s.Unlock(1);
        Assert.That(child.End("sem-lock"), Is.EqualTo("true"), "the parent's post woke the child");

        Assert.That(child.Send("sem-lock 1 20"), Is.EqualTo("false"), "the child's timed wait times out");
        Assert.That(s.TryLock(0), Is.False);
    }

    [Test]
    public void PingPongBetweenProcessesLosesNoWakeUp()
    {
        string name = NewName();
        IProcSemaphoreSet s = Create(2, name);
        ChildWorker child = ChildAttachedTo(name, 2);
        const int rounds = 2_000;
        child.Begin($"sem-pingpong {rounds}");
        for (int i = 0; i < rounds; i++)
        {
            s.Unlock(1);
            if (!s.Lock(0, Wait))
                Assert.Fail($"round {i}: the child's post was lost ({child.EndRaw("sem-pingpong", TimeSpan.FromSeconds(1))})");
        }
        child.End("sem-pingpong");
        Assert.That(s.TryLock(0), Is.False);
        Assert.That(child.Send("sem-lock 1 0"), Is.EqualTo("false"));
    }

    [TestCase(-1)]
    [TestCase(3)]
    [TestCase(int.MinValue)]
    [TestCase(int.MaxValue)]
    public void BadIndexIsOutOfRange(int index)
    {
        IProcSemaphoreSet s = Create(3);
        Assert.Multiple(() =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => s.Lock(index));
            Assert.Throws<ArgumentOutOfRangeException>(() => s.Lock(index, 10));
            Assert.Throws<ArgumentOutOfRangeException>(() => s.TryLock(index));
            Assert.Throws<ArgumentOutOfRangeException>(() => s.Unlock(index));
            Assert.Throws<ArgumentOutOfRangeException>(() => s.Reset(index));
        });
    }

    [TestCase("")]
    [TestCase("abcdefghijklmnopqrstuvwxy")] // 25 characters
    [TestCase("a/b")]
    [TestCase("a-b")]
    [TestCase("a b")]
    [TestCase("a\\b")]
    [TestCase("é")]
    public void BadNamesAreRejected(string name)
    {
        nint storage = Storage("badname", 1);
        Assert.Throws<ArgumentException>(() => _provider.Create(name, storage, Stride, 1));
        Assert.Throws<ArgumentException>(() => _provider.Attach(name, storage, Stride, 1));
    }

    [TestCase(0)]
    [TestCase(-1)]
    public void NonPositiveCountIsRejected(int count)
    {
        nint storage = Storage("badcount", 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => _provider.Create(NewName(), storage, Stride, count));
        Assert.Throws<ArgumentOutOfRangeException>(() => _provider.Attach(NewName(), storage, Stride, count));
    }

    [Test]
    public void StorageTooSmallOrMissingIsRejected()
    {
        if (_provider.StorageSize == 0)
        {
            // No shared storage: the address and stride are ignored, even null and zero.
            IProcSemaphoreSet s = _provider.Create(NewName(), 0, 0, 1);
            _created.Add(s);
            s.Unlock(0);
            Assert.That(s.TryLock(0), Is.True);
            return;
        }
        nint storage = Storage("badstorage", 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => _provider.Create(NewName(), storage, _provider.StorageSize - 1, 2));
        Assert.Throws<ArgumentException>(() => _provider.Create(NewName(), 0, Stride, 2));
        Assert.Throws<ArgumentException>(() => _provider.Create(NewName(), storage + 1, Stride, 2), "misaligned");
    }

    [Test]
    public void LongestNameWorks()
    {
        string name = NewName();
        name += new string('x', ProcSemaphoreStorage.MaxNameLength - name.Length); // 24 characters
        IProcSemaphoreSet s = Create(3, name);
        for (int i = 0; i < 3; i++)
        {
            s.Unlock(i);
            Assert.That(s.TryLock(i), Is.True);
            Assert.That(s.TryLock(i), Is.False);
        }
    }

    [Test]
    public void UseAfterDisposeIsAnObjectDisposedException()
    {
        string name = NewName();
        Create(1, name);
        IProcSemaphoreSet view = Attach(name, 1);
        view.Dispose();
        Assert.Throws<ObjectDisposedException>(() => view.Unlock(0));
        Assert.Throws<ObjectDisposedException>(() => view.TryLock(0));
        Assert.DoesNotThrow(() => view.Dispose(), "Dispose twice is harmless");
    }

    [Test]
    public void DestroyLeavesNothingBehind()
    {
        HashSet<string> before = DevShmSemaphores();
        string name = NewName();
        IProcSemaphoreSet s = _provider.Create(name, Storage(name, 4), Stride, 4);
        for (int i = 0; i < 4; i++)
            s.Unlock(i);
        if (variant == PosixNamed && OperatingSystem.IsLinux())
            Assert.That(DevShmSemaphores().Except(before).Count(), Is.EqualTo(4), "glibc keeps one file per named semaphore");
        s.Destroy();
        Assert.That(DevShmSemaphores().Except(before), Is.Empty, "no new /dev/shm/sem.pgipc.* after Destroy");
        Assert.Throws<ObjectDisposedException>(() => s.Destroy());
        if (Named)
        {
            var ex = Assert.Throws<PgIpcOsException>(() => _provider.Attach(name, Storage(name, 4), Stride, 4));
            Assert.That(ex!.Message, Does.Contain(name).Or.Contain("pgipc"));
        }
    }

    [Test, NamedOnly]
    public void CreatingANameTwiceIsRefusedAndTheFirstSetKeepsWorking()
    {
        HashSet<string> before = DevShmSemaphores();
        string name = NewName();
        IProcSemaphoreSet first = Create(2, name);
        first.Unlock(1);
        Assert.Throws<PgIpcOsException>(() => _provider.Create(name, Storage(name, 3), Stride, 3));
        Assert.That(first.TryLock(1), Is.True, "the refused Create did not disturb the live set");
        first.Unlock(0);
        Assert.That(first.TryLock(0), Is.True);
        first.Destroy();
        Assert.That(DevShmSemaphores().Except(before), Is.Empty);
    }

    [Test, NamedOnly]
    public void CreateFailingHalfWayRemovesWhatItMade()
    {
        HashSet<string> before = DevShmSemaphores();
        string name = NewName();
        using IDisposable blocker = HoldNamedObject(name, 2); // Create of 4 makes 0 and 1, then fails on 2
        var ex = Assert.Throws<PgIpcOsException>(() => _provider.Create(name, Storage(name, 4), Stride, 4));
        Assert.That(ex!.Message, Does.Contain("2 of 4"));
        if (variant == PosixNamed && OperatingSystem.IsLinux())
            Assert.That(DevShmSemaphores().Except(before).Select(Path.GetFileName),
                Is.EqualTo(new[] { "sem." + PosixSemaphoreProvider.SemName(name, 2)[1..] }), "only the blocker is left");
        // 0 and 1 were undone, so a set of 2 with the name can be made again.
        IProcSemaphoreSet again = _provider.Create(name, Storage(name, 2), Stride, 2);
        again.Destroy();
        blocker.Dispose();
        Assert.That(DevShmSemaphores().Except(before), Is.Empty, "nothing left in /dev/shm");
    }

    /// <summary>Makes the OS object of index <paramref name="index"/> of set <paramref name="name"/> directly; Dispose removes it.</summary>
    private unsafe IDisposable HoldNamedObject(string name, int index)
    {
        if (variant == PosixNamed)
        {
            string semName = PosixSemaphoreProvider.SemName(name, index);
            void* sem = PosixLibC.sem_open_variadic(semName, PosixLibC.O_CREAT | PosixLibC.O_EXCL, 0x180, 0);
            Assert.That(PosixLibC.IsSemFailed(sem), Is.False, "sem_open of the blocker");
            return new NamedPosixBlocker(new SafeSemaphoreHandle(sem), semName);
        }
        nint h = WinApi.CreateSemaphoreW(null, 0, 1, PgIpc.Platform.Windows.WindowsSemaphoreProvider.SemName(name, index));
        Assert.That(h, Is.Not.Zero, "CreateSemaphoreW of the blocker");
        return new PgIpc.Platform.Windows.SafeSemaphoreHandle(h);
    }

    private sealed class NamedPosixBlocker(SafeSemaphoreHandle handle, string semName) : IDisposable
    {
        public void Dispose()
        {
            if (handle.IsClosed)
                return;
            handle.Dispose();
            PosixLibC.sem_unlink(semName);
        }
    }
}

/*-------------------------------------------------------------------------
 * SLockTests.cs
 *   The spinlock: mutual exclusion between threads and between processes,
 *   TryAcquire, and "stuck spinlock" raised instead of a hang.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

public sealed class SLockTests
{
    [Test]
    public void ThreadsNeverOverlapInsideTheLock()
    {
        int lockWord = 0;
        long counter = 0;
        int inside = 0;
        bool overlapped = false;
        TestThreads.Run(4, _ =>
        {
            for (int i = 0; i < 50_000; i++)
            {
                SLock.Acquire(ref lockWord);
                if (Interlocked.Increment(ref inside) != 1)
                    overlapped = true;
                counter++;
                Interlocked.Decrement(ref inside);
                SLock.Release(ref lockWord);
            }
        });
        Assert.That(overlapped, Is.False);
        Assert.That(counter, Is.EqualTo(200_000));
        Assert.That(SLock.IsHeld(ref lockWord), Is.False);
    }

    [Test]
    public void TryAcquireFailsWhileHeld()
    {
        int lockWord = 0;
        Assert.That(SLock.TryAcquire(ref lockWord), Is.True);
        Assert.That(SLock.TryAcquire(ref lockWord), Is.False);
        SLock.Release(ref lockWord);
        Assert.That(SLock.TryAcquire(ref lockWord), Is.True);
    }

    [Test]
    public void ALockNobodyReleasesIsReportedAsStuck()
    {
        int saved = SLock.NumDelays;
        SLock.NumDelays = 5;
        try
        {
            int lockWord = Environment.ProcessId; // held by a live owner (this process) that never releases
            var ex = Assert.Throws<StuckSpinLockException>(() => SLock.Acquire(ref lockWord, "test lock"));
            Assert.That(ex!.Message, Does.Contain("stuck spinlock").And.Contain("test lock"));
        }
        finally
        {
            SLock.NumDelays = saved;
        }
    }

    [TestCaseSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void ProcessesNeverLoseAnUpdateUnderTheLock(string backend)
    {
        using ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("slock"), 1 << 20, PgIpcPlatform.Get(backend));
        try
        {
            ShmemRegion r = seg.InitStruct("slock.pair", 64, out _);
            Span<long> words = r.AsSpan<long>();
            using ChildWorker a = ChildWorker.Start(backend);
            using ChildWorker b = ChildWorker.Start(backend);
            a.Send($"attach {seg.Handle}");
            b.Send($"attach {seg.Handle}");
            const int n = 100_000;
            a.Begin($"lock-add slock.pair {n}");
            b.Begin($"lock-add slock.pair {n}");
            ref int lockWord = ref Unsafe.As<long, int>(ref words[0]);
            for (int i = 0; i < n; i++)
            {
                SLock.Acquire(ref lockWord);
                words[1]++;
                SLock.Release(ref lockWord);
            }
            a.End("lock-add");
            b.End("lock-add");
            Assert.That(Volatile.Read(ref words[1]), Is.EqualTo(3L * n));
        }
        finally
        {
            seg.Destroy();
        }
    }
}

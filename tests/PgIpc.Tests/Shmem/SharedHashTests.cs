/*-------------------------------------------------------------------------
 * SharedHashTests.cs
 *   The partitioned shared hash table: operations against a model,
 *   partitions borrowing free elements, a full table, type mismatches, and
 *   a second process finding what the first inserted.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Shmem;

[StructLayout(LayoutKind.Sequential)]
public struct TestTag : IEquatable<TestTag>
{
    public uint Rel;
    public int Fork;
    public uint Block;
    public bool Equals(TestTag o) => Rel == o.Rel && Fork == o.Fork && Block == o.Block;
    public override bool Equals(object? obj) => obj is TestTag t && Equals(t);
    public override int GetHashCode() => HashCode.Combine(Rel, Fork, Block);
}

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SharedHashTests(string backend)
{
    private ShmemSegment _seg = null!;

    [SetUp]
    public void SetUp()
        => _seg = ShmemSegment.Create(TestEnvironment.UniqueKey("hash"), 8 << 20, PgIpcPlatform.Get(backend));

    [TearDown]
    public void TearDown() => _seg.Destroy();

    [Test]
    public void InsertFindRemoveMatchAModel()
    {
        var h = SharedHash<TestTag, long>.Init(_seg, "hash.model", 4096, 16, out bool found);
        Assert.That(found, Is.False);
        var model = new Dictionary<TestTag, long>();
        var rng = new Random(1234);
        // Mismatches are collected and asserted once: one Assert per operation makes NUnit churn
        // enough dynamic methods to hit a CLR finalizer crash under Wine.
        var mismatches = new List<string>();
        for (int i = 0; i < 50_000; i++)
        {
            var key = new TestTag { Rel = (uint)rng.Next(8), Fork = rng.Next(3), Block = (uint)rng.Next(300) };
            uint hash = SharedHash<TestTag, long>.GetHashCode(key);
            switch (rng.Next(3))
            {
                case 0:
                    if (model.Count < 4096 || model.ContainsKey(key))
                    {
                        bool inserted = h.TryInsert(key, hash, i);
                        if (inserted != !model.ContainsKey(key))
                            mismatches.Add($"insert {i}");
                        model.TryAdd(key, i);
                    }
                    break;
                case 1:
                    bool had = h.Remove(key, hash, out long removed);
                    if (had != model.Remove(key, out long expected) || (had && removed != expected))
                        mismatches.Add($"remove {i}");
                    break;
                default:
                    bool present = h.TryFind(key, hash, out long v);
                    if (present != model.TryGetValue(key, out long mv) || (present && v != mv))
                        mismatches.Add($"find {i}");
                    break;
            }
        }
        Assert.That(mismatches, Is.Empty);
        Assert.That(h.Count, Is.EqualTo(model.Count));
    }

    [Test]
    public void EnterOrFindReturnsAReferenceIntoSharedMemory()
    {
        var h = SharedHash<long, long>.Init(_seg, "hash.ref", 100, 4, out _);
        uint hash = SharedHash<long, long>.GetHashCode(7);
        ref long v = ref h.EnterOrFind(7, hash, out bool found);
        Assert.That(found, Is.False);
        Assert.That(v, Is.Zero, "a new entry's value starts zeroed");
        v = 700;
        ref long again = ref h.EnterOrFind(7, hash, out found);
        Assert.That(found, Is.True);
        Assert.That(again, Is.EqualTo(700));
        ref long f = ref h.FindRef(8, SharedHash<long, long>.GetHashCode(8), out bool f8);
        Assert.That(f8, Is.False);
        Assert.That(System.Runtime.CompilerServices.Unsafe.IsNullRef(ref f), Is.True);
    }

    [Test]
    public void APartitionBorrowsFromOthersAndAFullTableIsAClearError()
    {
        const int capacity = 64;
        var h = SharedHash<int, int>.Init(_seg, "hash.full", capacity, 8, out _);
        // Fill with keys that all fall into one partition: it must borrow from the other seven free lists.
        int inserted = 0;
        int partition = -1;
        for (int k = 0; inserted < capacity; k++)
        {
            uint hash = SharedHash<int, int>.GetHashCode(k);
            if (partition < 0)
                partition = h.PartitionOf(hash);
            if (h.PartitionOf(hash) != partition)
                continue;
            Assert.That(h.TryInsert(k, hash, k * 10), Is.True);
            inserted++;
        }
        Assert.That(h.CountInPartition(partition), Is.EqualTo(capacity));
        int extra = 100_000;
        var ex = Assert.Throws<SharedHashFullException>(() => h.TryInsert(extra, SharedHash<int, int>.GetHashCode(extra), 1));
        Assert.That(ex!.Message, Does.Contain("hash.full").And.Contain("64"));
        // Everything is still there, and removing one makes room again.
        int found = 0;
        for (int k = 0; found < capacity; k++)
        {
            uint hash = SharedHash<int, int>.GetHashCode(k);
            if (h.PartitionOf(hash) != partition)
                continue;
            Assert.That(h.TryFind(k, hash, out int v), Is.True);
            Assert.That(v, Is.EqualTo(k * 10));
            found++;
            if (found == 1)
            {
                Assert.That(h.Remove(k, hash, out _), Is.True);
                Assert.That(h.TryInsert(extra, SharedHash<int, int>.GetHashCode(extra), 1), Is.True);
            }
        }
    }

    [Test]
    public void ReopeningWithOtherTypesOrShapeIsAnError()
    {
        SharedHash<long, long>.Init(_seg, "hash.shape", 100, 4, out _);
        Assert.That(SharedHash<long, long>.Init(_seg, "hash.shape", 100, 4, out bool found).Capacity, Is.EqualTo(100));
        Assert.That(found, Is.True);
        Assert.Throws<PgIpcException>(() => SharedHash<long, long>.Init(_seg, "hash.shape", 100, 8, out _));
        Assert.Throws<PgIpcException>(() => SharedHash<int, long>.Init(_seg, "hash.shape", 100, 4, out _));
    }

    [TestCase(0, 4)]
    [TestCase(10, 3)]
    [TestCase(10, 0)]
    public void BadShapesAreRejected(int capacity, int partitions)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SharedHash<int, int>.Init(_seg, "bad", capacity, partitions, out _));
    }

    [Test]
    public void ThreadsWorkingOnSeparatePartitionsUnderTheirLocks()
    {
        const int partitions = 16;
        var h = SharedHash<long, long>.Init(_seg, "hash.mt", 16_384, partitions, out _);
        ShmemRegion locks = _seg.InitStruct("hash.mt.locks", partitions * 64L, out _);
        TestThreads.Run(4, t =>
        {
            for (long i = 0; i < 3000; i++)
            {
                long key = t * 1_000_000 + i;
                uint hash = SharedHash<long, long>.GetHashCode(key);
                ref int lk = ref locks.AsSpan<SpinLockPadded>()[h.PartitionOf(hash)].Value;
                SLock.Acquire(ref lk);
                try { h.TryInsert(key, hash, key); }
                finally { SLock.Release(ref lk); }
            }
        });
        Assert.That(h.Count, Is.EqualTo(12_000));
        for (long t = 0; t < 4; t++)
            for (long i = 0; i < 3000; i += 97)
            {
                long key = t * 1_000_000 + i;
                Assert.That(h.TryFind(key, SharedHash<long, long>.GetHashCode(key), out long v) && v == key, Is.True);
            }
    }

    [Test]
    public void AnotherProcessFindsWhatThisOneInserted()
    {
        var h = SharedHash<long, long>.Init(_seg, "hash.xp", 1000, 8, out _);
        for (long k = 0; k < 500; k++)
            h.TryInsert(k * 3, SharedHash<long, long>.GetHashCode(k * 3), k + 1);
        using ChildWorker child = ChildWorker.Start(backend);
        child.Send($"attach {_seg.Handle}");
        Assert.That(child.Send("hash-get hash.xp 1000 8 300"), Is.EqualTo("true 101"));
        Assert.That(child.Send("hash-get hash.xp 1000 8 301"), Is.EqualTo("false 0"));
        child.Close();
    }

    [Test]
    public void HashIsDeterministic()
    {
        // Pinned values: every process must compute the same hash for the same key bytes.
        Assert.That(SharedHashFunction.Hash(ReadOnlySpan<byte>.Empty), Is.EqualTo(SharedHashFunction.Hash(ReadOnlySpan<byte>.Empty)));
        var tag = new TestTag { Rel = 1, Fork = 2, Block = 3 };
        Assert.That(SharedHash<TestTag, int>.GetHashCode(tag), Is.EqualTo(SharedHashFunction.Hash(MemoryMarshal.AsBytes(new ReadOnlySpan<TestTag>(in tag)))));
        Assert.That(SharedHashFunction.Hash("abcdefghijklm"u8), Is.Not.EqualTo(SharedHashFunction.Hash("abcdefghijklN"u8)));
    }
}

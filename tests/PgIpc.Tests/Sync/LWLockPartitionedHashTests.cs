/*-------------------------------------------------------------------------
 * LWLockPartitionedHashTests.cs
 *   The shared hash table with one LWLock per partition, as the buffer
 *   mapping table uses it (BufMappingPartitionLock): lookups under the
 *   partition lock shared, changes under it exclusive, many threads.
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LWLockPartitionedHashTests(string backend)
{
    [Test]
    public void ConcurrentEnterOrFindUnderPartitionLocksCountsEveryIncrement()
    {
        const int partitions = LockCluster.NumLocks, threads = 4, keys = 64, rounds = 3000;
        using LockCluster c = LockCluster.Create(PgIpcPlatform.Get(backend));
        var table = SharedHash<long, long>.Init(c.Segment, "test.partitioned", 256, partitions, out _);
        var errors = new ConcurrentQueue<Exception>();
        TestThreads.Run(threads, t =>
        {
            using Participant me = c.Procs.Join();
            LWLockArray locks = c.Locks;
            for (int r = 0; r < rounds; r++)
            {
                long key = (r * 7 + t) % keys;
                uint hash = SharedHash<long, long>.GetHashCode(key);
                ref LWLock partitionLock = ref locks[table.PartitionOf(hash)];
                if ((r & 3) == 3)
                {
                    partitionLock.Acquire(me, LWLockMode.Shared);
                    table.TryFind(key, hash, out _);
                    partitionLock.Release(me);
                    continue;
                }
                partitionLock.Acquire(me, LWLockMode.Exclusive);
                ref long v = ref table.EnterOrFind(key, hash, out _);
                v++;
                partitionLock.Release(me);
            }
        });
        long total = 0;
        using (Participant me = c.Procs.Join())
        {
            for (long key = 0; key < keys; key++)
            {
                uint hash = SharedHash<long, long>.GetHashCode(key);
                ref LWLock partitionLock = ref c.Locks[table.PartitionOf(hash)];
                partitionLock.Acquire(LWLockMode.Shared);
                if (table.TryFind(key, hash, out long v))
                    total += v;
                partitionLock.Release();
            }
        }
        Assert.That(total, Is.EqualTo((long)threads * (rounds - rounds / 4)));
        Assert.That(table.Count, Is.EqualTo(keys));
    }
}

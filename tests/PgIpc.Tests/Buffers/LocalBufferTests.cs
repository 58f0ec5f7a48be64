/*-------------------------------------------------------------------------
 * LocalBufferTests.cs
 *   Local buffers (temp_buffers), per backend: eviction with write-back and
 *   re-read through the storage manager with checksums, the clock sweep's
 *   preference for popular pages, the every-buffer-pinned error, negative
 *   buffer numbers, the temp_buffers limit, allocation on first use only,
 *   and clear errors for bad tags, foreign participants and use after
 *   dispose. Each pool runs on its owner's dedicated thread; the test
 *   thread asserts on what it reports.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LocalBufferTests(string backend)
{
    private const int ValueOffset = 128;
    private const uint Rel = 16384;
    private BufferCluster? _c;
    private string? _tempDir;

    [SetUp]
    public void SetUp()
    {
        // The cluster only provides participants; the local buffers keep their temporary files in their own directory.
        _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 16);
        _tempDir = BufferCluster.NewDataDirectory();
    }

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
        if (_tempDir is not null && Directory.Exists(_tempDir))
            Directory.Delete(_tempDir, recursive: true);
        _tempDir = null;
    }

    /// <summary>Runs <paramref name="body"/> as a participant on a dedicated thread.</summary>
    private void AsParticipant(Action<Participant> body)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = _c!.Procs.Join();
            body(me);
        });

    private static Exception? Capture(Action a) => Outcome.Capture(a);

    private static long ValueOf(IBufferManager bufs, Participant me, int buffer)
        => BinaryPrimitives.ReadInt64LittleEndian(bufs.GetPage(me, buffer)[ValueOffset..]);

    /// <summary>Extends <see cref="Rel"/> by <paramref name="count"/> blocks through the common API, block i holding 1000 + i, dirty.</summary>
    private static void Populate(IBufferManager bufs, Participant me, int count)
    {
        for (int i = 0; i < count; i++)
        {
            int b = bufs.ReadBuffer(me, Rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
            bufs.LockBuffer(me, b, BufferLockMode.Exclusive);
            BinaryPrimitives.WriteInt64LittleEndian(bufs.GetPage(me, b)[ValueOffset..], 1000L + bufs.GetTag(me, b).BlockNumber);
            bufs.MarkBufferDirty(me, b);
            bufs.LockBuffer(me, b, BufferLockMode.Unlock);
            bufs.ReleaseBuffer(me, b);
        }
    }

    [Test]
    public void EvictionWritesBackAndRereadRoundTripsWithChecksums()
    {
        const int buffers = 4, blocks = 12;
        var seen = new long[blocks];
        long writesAfterPopulate = 0, readsBefore = 0, readsAfter = 0;
        Exception? corrupt = null;
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, buffers);
            IBufferManager bufs = local;
            Populate(bufs, me, blocks);
            // Nothing was flushed explicitly: every block but the resident ones went to disk on eviction.
            writesAfterPopulate = local.Smgr.Writes;
            // Modify each page again (read back from disk for the evicted ones), dirty, release.
            for (int i = 0; i < blocks; i++)
            {
                int b = bufs.ReadBuffer(me, Rel, ForkNumber.Main, i);
                BinaryPrimitives.WriteInt64LittleEndian(bufs.GetPage(me, b)[ValueOffset..], ValueOf(bufs, me, b) + 1);
                bufs.MarkBufferDirty(me, b);
                bufs.ReleaseBuffer(me, b);
            }
            readsBefore = local.Smgr.Reads;
            for (int i = 0; i < blocks; i++)
            {
                int b = bufs.ReadBuffer(me, Rel, ForkNumber.Main, i);
                seen[i] = ValueOf(bufs, me, b);
                bufs.ReleaseBuffer(me, b);
            }
            readsAfter = local.Smgr.Reads;

            // Corrupt block 0 on disk once it is not resident: the re-read fails its checksum.
            local.FlushAllBuffers(me);
            for (int i = blocks - buffers; i < blocks; i++)
                bufs.ReleaseBuffer(me, bufs.ReadBuffer(me, Rel, ForkNumber.Main, i));
            if (local.Lookup(me, new BufferTag(Rel, ForkNumber.Main, 0)) != BufferPool.InvalidBuffer)
                throw new InvalidOperationException("block 0 should have been evicted");
            using (var f = new FileStream(local.Smgr.PathOf(Rel, ForkNumber.Main, 0), FileMode.Open, FileAccess.ReadWrite,
                FileShare.ReadWrite | FileShare.Delete))
            {
                f.Position = 4000;
                int x = f.ReadByte();
                f.Position = 4000;
                f.WriteByte((byte)(x ^ 0x10));
            }
            corrupt = Capture(() => bufs.ReadBuffer(me, Rel, ForkNumber.Main, 0));
        });
        Assert.Multiple(() =>
        {
            Assert.That(writesAfterPopulate, Is.EqualTo(2 * blocks - buffers), "each extension writes once; each eviction of a dirty page once more");
            Assert.That(seen, Is.EqualTo(Enumerable.Range(0, blocks).Select(i => 1000L + i + 1).ToArray()));
            Assert.That(readsAfter - readsBefore, Is.EqualTo(blocks), "a scan three times the pool's size misses on every page: all came back from disk");
            Assert.That(corrupt, Is.InstanceOf<PageChecksumException>());
            Assert.That(corrupt!.Message, Does.Contain($"invalid page in block 0 of relation {Rel}"));
        });
    }

    [Test]
    public void WrittenPagesCarryTheirChecksumOnDisk()
    {
        bool[] verified = new bool[3];
        ushort[] stored = new ushort[3];
        string path = "";
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, 8);
            Populate(local, me, 3);
            Assert.That(local.FlushAllBuffers(me), Is.EqualTo(3));
            path = local.Smgr.PathOf(Rel, ForkNumber.Main, 0);
        });
        byte[] file = File.ReadAllBytes(path);
        for (int blk = 0; blk < 3; blk++)
        {
            ReadOnlySpan<byte> page = file.AsSpan(blk * BufferPool.BlockSize, BufferPool.BlockSize);
            verified[blk] = PageChecksum.Verify(page, (uint)blk, out stored[blk], out _);
        }
        Assert.Multiple(() =>
        {
            Assert.That(file, Has.Length.EqualTo(3 * BufferPool.BlockSize));
            Assert.That(verified, Has.All.True);
            Assert.That(stored, Has.All.Not.Zero, "a written page has a checksum");
        });
    }

    [Test]
    public void EveryBufferPinnedIsAClearError()
    {
        const int buffers = 4;
        Exception? allPinned = null;
        int afterRelease = 0;
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, buffers);
            Populate(local, me, buffers + 1);
            var pins = new List<int>();
            for (int i = 0; i < buffers; i++)
                pins.Add(local.ReadBuffer(me, Rel, ForkNumber.Main, i));
            allPinned = Capture(() => local.ReadBuffer(me, Rel, ForkNumber.Main, buffers));
            local.ReleaseBuffer(me, pins[1]);
            pins.RemoveAt(1);
            afterRelease = local.ReadBuffer(me, Rel, ForkNumber.Main, buffers);
            pins.Add(afterRelease);
            Assert.That(local.ReleaseAllBuffers(me), Is.EqualTo(buffers));
            Assert.That(local.PinnedBuffers, Is.Zero);
        });
        Assert.Multiple(() =>
        {
            Assert.That(allPinned, Is.InstanceOf<NoEmptyLocalBufferException>());
            Assert.That(allPinned!.Message, Does.Contain("no empty local buffer available").And.Contain($"all {buffers} local buffers"));
            Assert.That(afterRelease, Is.LessThan(0), "a released buffer is the victim");
        });
    }

    [Test]
    public void BufferNumbersAreNegative()
    {
        const int buffers = 8;
        var ids = new List<int>();
        var pinCounts = new List<int>();
        Exception? positive = null, beyond = null, zero = null;
        bool localSign = false, sharedSign = true;
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, buffers);
            Populate(local, me, buffers);
            for (int i = 0; i < buffers; i++)
                ids.Add(local.ReadBuffer(me, Rel, ForkNumber.Main, i));
            int first = ids[0];
            local.IncrBufferRefCount(me, first);
            pinCounts.Add(local.PinCount(me, first));
            local.ReleaseBuffer(me, first);
            pinCounts.Add(local.PinCount(me, first));
            positive = Capture(() => local.ReleaseBuffer(me, 1));
            beyond = Capture(() => local.GetPage(me, -(buffers + 1)));
            zero = Capture(() => local.MarkBufferDirty(me, 0));
            localSign = IBufferManager.BufferIsLocal(first);
            sharedSign = IBufferManager.BufferIsLocal(SharedBufferNumber(me));
            local.ReleaseAllBuffers(me);
        });
        Assert.Multiple(() =>
        {
            Assert.That(ids, Is.Unique);
            Assert.That(ids, Has.All.InRange(-buffers, -1));
            Assert.That(pinCounts, Is.EqualTo(new[] { 2, 1 }));
            Assert.That(positive, Is.InstanceOf<BufferUsageException>());
            Assert.That(positive!.Message, Does.Contain("bad local buffer number 1").And.Contain($"-1..-{buffers}"));
            Assert.That(beyond, Is.InstanceOf<BufferUsageException>());
            Assert.That(zero, Is.InstanceOf<BufferUsageException>());
            Assert.That(localSign, Is.True);
            Assert.That(sharedSign, Is.False);
        });
    }

    /// <summary>A shared buffer number from the cluster's pool, for the sign check.</summary>
    private int SharedBufferNumber(Participant me)
    {
        int b = _c!.Pool.ReadBuffer(me, 1, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
        _c.Pool.ReleaseBuffer(me, b);
        return b;
    }

    [Test]
    public void TempBuffersBoundsThePool()
    {
        const int buffers = 8, blocks = 40;
        var ids = new HashSet<int>();
        long allocated = 0;
        int used = 0;
        Exception? change = null, tooSmall = null;
        int changedBefore = 0;
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, 100);
            local.NumBuffers = buffers; // allowed before first use
            changedBefore = local.NumBuffers;
            Populate(local, me, blocks);
            for (int round = 0; round < 2; round++)
                for (int i = 0; i < blocks; i++)
                {
                    int b = local.ReadBuffer(me, Rel, ForkNumber.Main, i);
                    ids.Add(b);
                    local.ReleaseBuffer(me, b);
                }
            allocated = local.AllocatedBytes;
            used = BufferInspection.Summarize(local).Used;
            change = Capture(() => local.NumBuffers = 16);
            tooSmall = Capture(() => new LocalBuffers(me, _tempDir!, 0).Dispose());
        });
        Assert.Multiple(() =>
        {
            Assert.That(changedBefore, Is.EqualTo(buffers));
            Assert.That(ids, Has.Count.EqualTo(buffers), "every buffer is used, and no more");
            Assert.That(allocated, Is.EqualTo((long)buffers * BufferPool.BlockSize));
            Assert.That(used, Is.EqualTo(buffers));
            Assert.That(change, Is.InstanceOf<BufferUsageException>());
            Assert.That(change!.Message, Does.Contain("cannot change temp_buffers"));
            Assert.That(tooSmall, Is.InstanceOf<ArgumentOutOfRangeException>());
        });
    }

    [Test]
    public void MemoryIsAllocatedOnFirstUseOnly()
    {
        bool initBefore = true, initAfterExtendOnly = false;
        long bytesBefore = -1, bytesAfterOne = 0, bytesAfterSeventeen = 0, bytesAfterDispose = -1;
        int usedBefore = -1;
        AsParticipant(me =>
        {
            var local = new LocalBuffers(me, _tempDir!, LocalBuffers.DefaultNumBuffers);
            initBefore = local.IsInitialized;
            bytesBefore = local.AllocatedBytes;
            usedBefore = BufferInspection.Summarize(local).Used;
            Populate(local, me, 1);
            initAfterExtendOnly = local.IsInitialized;
            bytesAfterOne = local.AllocatedBytes;
            Populate(local, me, 16);
            bytesAfterSeventeen = local.AllocatedBytes;
            local.Dispose();
            bytesAfterDispose = local.AllocatedBytes;
        });
        Assert.Multiple(() =>
        {
            Assert.That(initBefore, Is.False);
            Assert.That(bytesBefore, Is.Zero);
            Assert.That(usedBefore, Is.Zero);
            Assert.That(initAfterExtendOnly, Is.True);
            Assert.That(bytesAfterOne, Is.EqualTo((long)LocalBuffers.FirstChunkBlocks * BufferPool.BlockSize), "one chunk, not temp_buffers");
            Assert.That(bytesAfterSeventeen, Is.EqualTo(3L * LocalBuffers.FirstChunkBlocks * BufferPool.BlockSize), "the next chunk doubles");
            Assert.That(bytesAfterDispose, Is.Zero);
        });
    }

    [Test]
    public void PopularPagesOutliveTheSweep()
    {
        const int buffers = 8;
        var hot = new List<bool>();
        var cold = new List<bool>();
        AsParticipant(me =>
        {
            using var local = new LocalBuffers(me, _tempDir!, buffers);
            Populate(local, me, buffers + 4);
            // Blocks 0..3 hot (read 5 times), 4..7 read once, then 4 new pages need 4 victims.
            for (int i = 0; i < buffers; i++)
                local.ReleaseBuffer(me, local.ReadBuffer(me, Rel, ForkNumber.Main, i));
            for (int round = 0; round < 5; round++)
                for (int i = 0; i < 4; i++)
                    local.ReleaseBuffer(me, local.ReadBuffer(me, Rel, ForkNumber.Main, i));
            for (int i = buffers; i < buffers + 4; i++)
                local.ReleaseBuffer(me, local.ReadBuffer(me, Rel, ForkNumber.Main, i));
            for (int i = 0; i < buffers; i++)
                (i < 4 ? hot : cold).Add(local.Lookup(me, new BufferTag(Rel, ForkNumber.Main, (uint)i)) != BufferPool.InvalidBuffer);
        });
        Assert.Multiple(() =>
        {
            Assert.That(hot, Has.All.True, "hot pages stay");
            Assert.That(cold, Has.All.False, "pages read once were the victims");
        });
    }

    [Test]
    public void MisuseIsAClearError()
    {
        Exception? negative = null, fork = null, extendBlock = null, notPinned = null, foreign = null, disposed = null, missing = null;
        int dropped = -1;
        int afterDrop = 0;
        AsParticipant(me =>
        {
            var local = new LocalBuffers(me, _tempDir!, 8);
            negative = Capture(() => local.ReadBuffer(me, Rel, ForkNumber.Main, -5));
            fork = Capture(() => local.ReadBuffer(me, Rel, (ForkNumber)9, 0));
            extendBlock = Capture(() => local.ReadBuffer(me, Rel, ForkNumber.Main, 3, ReadBufferMode.Extend));
            missing = Capture(() => local.ReadBuffer(me, Rel + 1, ForkNumber.Main, 0));
            Populate(local, me, 2);
            int b = local.ReadBuffer(me, Rel, ForkNumber.Main, 0);
            local.ReleaseBuffer(me, b);
            notPinned = Capture(() => local.ReleaseBuffer(me, b));
            // Another participant (another thread of this process) may not use this participant's pool.
            TestThreads.Run(1, _ =>
            {
                using Participant other = _c!.Procs.Join();
                foreign = Capture(() => local.ReadBuffer(other, Rel, ForkNumber.Main, 0));
            });
            dropped = local.DropRelationBuffers(me, Rel, ForkNumber.Main, 1);
            afterDrop = local.Lookup(me, new BufferTag(Rel, ForkNumber.Main, 1));
            local.Dispose();
            disposed = Capture(() => local.ReadBuffer(me, Rel, ForkNumber.Main, 0));
        });
        Assert.Multiple(() =>
        {
            Assert.That(negative, Is.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(negative!.Message, Does.Contain("block -5"));
            Assert.That(fork, Is.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(fork!.Message, Does.Contain("unknown fork 9"));
            Assert.That(extendBlock, Is.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(missing, Is.InstanceOf<SmgrException>());
            Assert.That(missing!.Message, Does.Contain("does not exist"));
            Assert.That(notPinned, Is.InstanceOf<BufferUsageException>());
            Assert.That(notPinned!.Message, Does.Contain("is not pinned"));
            Assert.That(foreign, Is.InstanceOf<BufferUsageException>());
            Assert.That(foreign!.Message, Does.Contain("local buffers belong to"));
            Assert.That(dropped, Is.EqualTo(1));
            Assert.That(afterDrop, Is.EqualTo(BufferPool.InvalidBuffer));
            Assert.That(disposed, Is.InstanceOf<ObjectDisposedException>());
        });
    }
}

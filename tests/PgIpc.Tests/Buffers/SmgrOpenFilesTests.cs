/*-------------------------------------------------------------------------
 * SmgrOpenFilesTests.cs
 *   The storage manager's open-file bound (issue 13, item 10a; fd.c's
 *   virtual file descriptors): with MaxOpenFiles = 4, twenty segment files
 *   written and read keep at most four descriptors open, every page reads
 *   back, and a sync (the checkpoint's) fsyncs every dirty file, the ones
 *   the LRU closed included (reopened for it).
 *
 * NOTES
 *   Descriptors are counted in /proc/self/fd (links into the data
 *   directory) where the OS has it, and through Smgr.OpenFiles everywhere.
 *   fsyncs are counted through the FsyncFault hook (it sees the path of
 *   every file fsync and returns no fault).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Collections.Concurrent;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SmgrOpenFilesTests(string backend)
{
    private const int Files = 20;
    private const int MaxOpen = 4;
    private string? _dir;
    private BufferCluster? _cluster;

    [SetUp]
    public void SetUp() => _dir = BufferCluster.NewDataDirectory();

    [TearDown]
    public void TearDown()
    {
        _cluster?.Dispose();
        _cluster = null;
        if (_dir is not null && Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
        _dir = null;
    }

    /// <summary>This process's descriptors open on files of <paramref name="dir"/>; -1 where /proc cannot say.</summary>
    private static int DescriptorsInto(string dir)
    {
        if (!Directory.Exists("/proc/self/fd"))
            return -1;
        string prefix = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)) + "/";
        return Directory.EnumerateFileSystemEntries("/proc/self/fd").Count(f =>
        {
            try { return new FileInfo(f).LinkTarget?.StartsWith(prefix, StringComparison.Ordinal) == true; }
            catch (IOException) { return false; } // the enumeration's own descriptor, closed meanwhile
        });
    }

    private static byte[] Page(long value)
    {
        byte[] p = new byte[BufferPool.BlockSize];
        BinaryPrimitives.WriteInt64LittleEndian(p.AsSpan(64), value);
        return p;
    }

    [Test]
    public void TwentySegmentFilesThroughFourDescriptorsAndEveryDirtyFileIsStillSynced()
    {
        // One block per segment: blocks 0..19 of relation 5 are the files "5", "5.1", ..., "5.19".
        using var smgr = new Smgr(_dir!, blocksPerSegment: 1, maxOpenFiles: MaxOpen, PgIpcPlatform.Get(backend).Files);
        var synced = new ConcurrentDictionary<string, int>();
        smgr.FsyncFault = path =>
        {
            synced.AddOrUpdate(path, 1, (_, n) => n + 1);
            return null;
        };
        int mostOpen = 0, mostDescriptors = 0;
        void Observe()
        {
            mostOpen = Math.Max(mostOpen, smgr.OpenFiles);
            mostDescriptors = Math.Max(mostDescriptors, DescriptorsInto(_dir!));
        }

        for (uint b = 0; b < Files; b++)
        {
            smgr.Extend(new BufferTag(5, ForkNumber.Main, b), Page(1000 + b));
            Observe();
        }
        // Every file again, in another order, so each use finds its file closed by the LRU.
        for (uint b = 0; b < Files; b += 2)
        {
            smgr.Write(new BufferTag(5, ForkNumber.Main, b), Page(2000 + b));
            Observe();
        }
        byte[] page = new byte[BufferPool.BlockSize];
        var values = new long[Files];
        for (uint b = Files; b-- > 0;)
        {
            smgr.Read(new BufferTag(5, ForkNumber.Main, b), page);
            values[b] = BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(64));
            Observe();
        }
        uint blocks = smgr.NBlocks(5, ForkNumber.Main);
        Observe();
        int pending = smgr.PendingSyncs;
        int n = smgr.Sync();
        Observe();

        string[] expected = [.. Enumerable.Range(0, Files).Select(b => smgr.PathOf(5, ForkNumber.Main, (uint)b))];
        Assert.Multiple(() =>
        {
            Assert.That(mostOpen, Is.LessThanOrEqualTo(MaxOpen), "Smgr.OpenFiles never above the bound");
            if (mostDescriptors >= 0)
                Assert.That(mostDescriptors, Is.LessThanOrEqualTo(MaxOpen), "descriptors into the data directory (/proc/self/fd)");
            for (int b = 0; b < Files; b++)
                Assert.That(values[b], Is.EqualTo(b % 2 == 0 ? 2000 + b : 1000 + b), $"block {b} reads back");
            Assert.That(blocks, Is.EqualTo((uint)Files));
            Assert.That(pending, Is.EqualTo(Files), "every written file waits for its fsync");
            Assert.That(n, Is.EqualTo(Files), "Sync fsynced every dirty file");
            Assert.That(synced.Keys, Is.EquivalentTo(expected), "each file fsynced, those the LRU closed reopened for it");
            Assert.That(synced.Values, Is.All.EqualTo(1));
            Assert.That(smgr.PendingSyncs, Is.Zero);
        });
    }

    [Test]
    public void ACheckpointOfTheSharedPoolFsyncsEveryDirtyFileWithFourDescriptors()
    {
        _cluster = BufferCluster.Create(PgIpcPlatform.Get(backend), 16, dataDirectory: _dir, maxOpenFiles: MaxOpen);
        BufferCluster c = _cluster;
        var synced = new ConcurrentDictionary<string, int>();
        c.Pool.Smgr.FsyncFault = path =>
        {
            synced.AddOrUpdate(path, 1, (_, n) => n + 1);
            return null;
        };
        CheckpointStats stats = default;
        int mostDescriptors = 0;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            for (uint rel = 100; rel < 100 + Files; rel++)
            {
                BufferStress.Create(c.Pool, me, rel, 2);
                mostDescriptors = Math.Max(mostDescriptors, DescriptorsInto(_dir!));
            }
            stats = c.Pool.CheckpointBuffers(me);
            mostDescriptors = Math.Max(mostDescriptors, DescriptorsInto(_dir!));
        });
        string[] expected = [.. Enumerable.Range(100, Files).Select(r => c.Pool.Smgr.PathOf((uint)r, ForkNumber.Main, 0))];
        Assert.Multiple(() =>
        {
            Assert.That(c.Pool.Smgr.MaxOpenFiles, Is.EqualTo(MaxOpen), "the builder's WithMaxOpenFiles reached the pool");
            Assert.That(c.Pool.Smgr.OpenFiles, Is.LessThanOrEqualTo(MaxOpen));
            if (mostDescriptors >= 0)
                Assert.That(mostDescriptors, Is.LessThanOrEqualTo(MaxOpen), "descriptors into the data directory (/proc/self/fd)");
            Assert.That(stats.FilesSynced, Is.EqualTo(Files), "the checkpoint fsynced every relation file");
            Assert.That(synced.Keys, Is.EquivalentTo(expected));
        });
    }
}

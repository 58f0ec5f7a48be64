/*-------------------------------------------------------------------------
 * SharedFileSetTests.cs
 *   SharedFileSet with real parallel workers: two worker processes each
 *   create a file in the set (several segment files each) and write to
 *   it; the leader opens each read-only, reads it through and at sought
 *   positions, and the set's directory with every file is gone once the
 *   last process (the leader) detaches from the segment. Also, in one
 *   process: the reference count, attaching to a destroyed set, names.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Parallel;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Storage;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Storage;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class SharedFileSetTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private const long SegmentSize = 32 * 1024; // 20,000 longs = 160,000 bytes: five segment files per worker
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private StringWriter _log = new();
    private Supervisor? _cluster;
    private Participant? _leader;
    private ParallelContext? _ctx;
    private string? _dataDir;

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (_cluster is { Cluster.IsAttached: true })
                _ctx?.Dispose();
        }
        finally
        {
            _ctx = null;
            if (_cluster is { Cluster.IsAttached: true })
                _leader?.Dispose();
            _leader = null;
            _cluster?.Dispose();
            _cluster = null;
            if (_dataDir is not null && Directory.Exists(_dataDir))
                Directory.Delete(_dataDir, recursive: true);
            _dataDir = null;
        }
    }

    private Supervisor Start(string what)
    {
        _log = new StringWriter();
        _dataDir = Directory.CreateTempSubdirectory("pgipc-sfs").FullName;
        _cluster = new ClusterBuilder(TestEnvironment.UniqueKey(what))
            .WithPlatform(_platform)
            .WithDataDirectory(_dataDir)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(_log)
            .WithStopGrace(TimeSpan.FromSeconds(2))
            .Build();
        _cluster.Start();
        _leader = _cluster.Cluster.Procs.Join(ProcKind.Backend);
        return _cluster;
    }

    [Test]
    public void WorkersWriteFilesTheLeaderReadsAndTheLastDetachDeletesThem()
    {
        Supervisor c = Start("sfs");
        const int workers = 2;
        _ctx = ParallelContext.Create(c.Cluster, PostmasterWorkerCommands.Spec("fileset", backend, SharedFileSetWorkerMain.ModePrefix + "write"), workers);
        _ctx.Estimator.EstimateChunk(SharedFileSet.Size);
        _ctx.Estimator.EstimateKeys(1);
        _ctx.InitializeDsm();
        ShmTocChunk chunk = _ctx.Toc.Allocate(SharedFileSet.Size);
        var space = c.Cluster.TempFileSpace(segmentSize: SegmentSize);
        SharedFileSet set = SharedFileSet.Initialize(chunk, _ctx.Segment, space);
        _ctx.Toc.Insert(SharedFileSetWorkerMain.KeyFileSet, chunk);
        Assert.That(set.Directory, Does.StartWith(TempFileSpace.TempDirectoryOf(_dataDir!)));
        Assert.That(set.RefCount, Is.EqualTo(1));

        _ctx.LaunchParallelWorkers();
        _ctx.WaitForParallelWorkersToFinish(Patience);

        Span<byte> one = stackalloc byte[8];
        for (int w = 0; w < workers; w++)
        {
            using BufFile f = set.OpenFile($"worker{w}");
            Assert.That(f.IsReadOnly, Is.True);
            Assert.That(f.SegmentCount, Is.EqualTo(5), "160,000 bytes in 32 KiB segments");
            Assert.That(f.Length, Is.EqualTo(SharedFileSetWorkerMain.Count * 8L));
            for (int i = 0; i < SharedFileSetWorkerMain.Count; i++)
            {
                f.ReadExactly(one);
                Assert.That(MemoryMarshal.Read<long>(one), Is.EqualTo(SharedFileSetWorkerMain.ValueOf(w, i)), $"worker {w} value {i}");
            }
            Assert.That(f.Read(one), Is.Zero, "end of file");
            // Positions across segment boundaries, backwards too.
            foreach (int i in new[] { 19_999, 4096, 4095, 0, 12_288 })
            {
                f.Seek(i * 8L);
                f.ReadExactly(one);
                Assert.That(MemoryMarshal.Read<long>(one), Is.EqualTo(SharedFileSetWorkerMain.ValueOf(w, i)), $"worker {w} value {i} after a seek");
            }
            Assert.Throws<InvalidOperationException>(() => f.Write(new byte[8]), "opened read-only");
        }
        Assert.Throws<FileNotFoundException>(() => set.OpenFile("nobody"));
        Assert.That(Directory.GetFiles(set.Directory), Has.Length.EqualTo(workers * 5));

        _ctx.Dispose(); // waits for the workers to exit (their references went at their detach), then detaches: the last
        _ctx = null;
        Assert.That(Directory.Exists(set.Directory), Is.False, "the last detach deleted the set's directory and files");
        Assert.That(Directory.GetFileSystemEntries(TempFileSpace.TempDirectoryOf(_dataDir!)), Is.Empty);
        Assert.That(c.CrashRestarts, Is.Zero, _log.ToString());
    }

    [Test]
    public void ReferencesAreCountedAndADestroyedSetCannotBeAttached()
    {
        Supervisor c = Start("sfs-ref");
        DsmSegment seg = DsmSegment.Create(c.Cluster.Dsm, 4096)!;
        DsmSegment second = DsmSegment.Attach(c.Cluster.Dsm, seg.Handle);
        try
        {
            ShmToc toc = ShmToc.Create(0x5346_5354, seg.Pointer, seg.Size);
            ShmTocChunk chunk = toc.Allocate(SharedFileSet.Size);
            var space = c.Cluster.TempFileSpace();
            SharedFileSet set = SharedFileSet.Initialize(chunk, seg, space);
            SharedFileSet other = SharedFileSet.Attach(chunk, second, space);
            Assert.That(set.RefCount, Is.EqualTo(2));
            using (BufFile f = other.CreateFile("a"))
                f.Write([1, 2, 3]);
            Assert.Throws<ArgumentException>(() => set.CreateFile("../escape"));
            Assert.Throws<ArgumentException>(() => set.CreateFile(".."));

            second.Detach();
            Assert.That(set.RefCount, Is.EqualTo(1));
            Assert.That(File.Exists(Path.Combine(set.Directory, "a.0")), Is.True, "one reference left: the files stay");
            Assert.That(set.DeleteFile("a"), Is.True);
            Assert.That(set.DeleteFile("a"), Is.False);

            seg.Detach();
            Assert.That(Directory.Exists(set.Directory), Is.False);
            // The chunk's memory is gone with the segment; a set whose count reached 0 refuses attachment.
            DsmSegment again = DsmSegment.Create(c.Cluster.Dsm, 4096)!;
            try
            {
                ShmToc t2 = ShmToc.Create(0x5346_5354, again.Pointer, again.Size);
                ShmTocChunk ch2 = t2.Allocate(SharedFileSet.Size);
                SharedFileSet s2 = SharedFileSet.Initialize(ch2, again, space);
                Interlocked.Exchange(ref ch2.As<SharedFileSetData>().RefCount, 0); // as after the last detach
                var ex = Assert.Throws<InvalidOperationException>(() => SharedFileSet.Attach(ch2, again, space));
                Assert.That(ex!.Message, Does.Contain("already destroyed"));
                ch2.As<SharedFileSetData>().Magic = 0;
                Assert.Throws<ShmemCorruptException>(() => SharedFileSet.Attach(ch2, again, space));
                ch2.As<SharedFileSetData>().RefCount = 1;
                s2.DeleteAll();
            }
            finally
            {
                again.Detach();
            }
        }
        finally
        {
            if (second.IsAttached) second.Detach();
            if (seg.IsAttached) seg.Detach();
        }
    }
}

/*-------------------------------------------------------------------------
 * BufFileTests.cs
 *   BufFile and TempFileSpace in one process: a file across several small
 *   segment files read back through sequential reads, seeks (forwards,
 *   backwards, inside a dirty buffer) and overwrites, compared with a
 *   byte array kept beside it; modes 0700 / 0600 on Unix; deletion at
 *   Dispose and by the finaliser; temp_file_limit; and the supervisor's
 *   removal of leftover temporary files at start and at a crash restart.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Storage;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Storage;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BufFileTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private string _dataDir = "";

    [SetUp]
    public void SetUp() => _dataDir = Directory.CreateTempSubdirectory("pgipc-buffile").FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
    }

    private string TempDir => TempFileSpace.TempDirectoryOf(_dataDir);

    private string[] TempEntries() => Directory.Exists(TempDir) ? Directory.GetFileSystemEntries(TempDir) : [];

    [Test]
    public void ReadsWritesAndSeeksAcrossSegmentsAsAByteArrayWould()
    {
        var space = TempFileSpace.ForDataDirectory(_dataDir, segmentSize: 16 * 1024, platform: _platform);
        var model = new byte[100_000];
        new Random(17).NextBytes(model);
        using (BufFile f = BufFile.CreateTemp(space))
        {
            // Writes of odd sizes, so buffer and segment boundaries fall inside them.
            for (int at = 0; at < model.Length;)
            {
                int n = Math.Min(model.Length - at, 1 + (at * 7 % 5003));
                f.Write(model.AsSpan(at, n));
                at += n;
            }
            Assert.That(f.Position, Is.EqualTo(model.Length));
            Assert.That(f.Length, Is.EqualTo(model.Length));
            Assert.That(f.SegmentCount, Is.EqualTo(7), "100,000 bytes in 16 KiB segments");
            Assert.That(space.TemporaryFilesSize, Is.EqualTo(model.Length), "every byte counted against temp_file_limit");
            Assert.That(TempEntries(), Has.Length.EqualTo(7));
            if (!OperatingSystem.IsWindows())
            {
                Assert.That(File.GetUnixFileMode(TempDir) & (UnixFileMode)0x1FF, Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
                foreach (string p in f.SegmentPaths)
                    Assert.That(File.GetUnixFileMode(p) & (UnixFileMode)0x1FF, Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite), p);
            }

            f.Seek(0);
            var back = new byte[model.Length];
            Assert.That(f.Read(back), Is.EqualTo(model.Length));
            Assert.That(back, Is.EqualTo(model));
            Assert.That(f.Read(back.AsSpan(0, 10)), Is.Zero, "at the end");

            // Random seeks, reads and overwrites against the model.
            var rnd = new Random(5);
            var buf = new byte[9000];
            for (int k = 0; k < 400; k++)
            {
                int at = rnd.Next(model.Length);
                int n = Math.Min(rnd.Next(1, buf.Length), model.Length - at);
                f.Seek(at);
                if (rnd.Next(3) == 0)
                {
                    rnd.NextBytes(buf.AsSpan(0, n));
                    f.Write(buf.AsSpan(0, n));
                    buf.AsSpan(0, n).CopyTo(model.AsSpan(at));
                    // A small seek back inside the dirty buffer, then a read of what was just written.
                    int backBy = Math.Min(n, rnd.Next(1, 100));
                    f.Seek(at + n - backBy);
                    f.ReadExactly(buf.AsSpan(0, backBy));
                    Assert.That(buf.AsSpan(0, backBy).SequenceEqual(model.AsSpan(at + n - backBy, backBy)), Is.True, $"step {k}: read-back of a write");
                }
                else
                {
                    f.ReadExactly(buf.AsSpan(0, n));
                    Assert.That(buf.AsSpan(0, n).SequenceEqual(model.AsSpan(at, n)), Is.True, $"step {k}: {n} bytes at {at}");
                    Assert.That(f.Position, Is.EqualTo(at + n));
                }
            }
            f.Seek(0);
            f.ReadExactly(back);
            Assert.That(back, Is.EqualTo(model));
            Assert.That(f.Length, Is.EqualTo(model.Length), "overwrites do not grow the file");

            // Appending at the end and block seeks.
            f.Seek(f.Length);
            f.Write(new byte[] { 42 });
            f.SeekBlock(12);
            f.ReadExactly(buf.AsSpan(0, 1));
            Assert.That(buf[0], Is.EqualTo(model[12 * BufFile.BlockSize]));
            Assert.Throws<ArgumentOutOfRangeException>(() => f.Seek(10 * 16 * 1024));
        }
        Assert.That(TempEntries(), Is.Empty, "Dispose deleted every segment");
        Assert.That(space.TemporaryFilesSize, Is.Zero);
    }

    [Test]
    public void WritingPastTempFileLimitFailsNamingTheLimitAndWritesNothing()
    {
        var space = TempFileSpace.ForDataDirectory(_dataDir, tempFileLimitKiB: 64, segmentSize: 16 * 1024, platform: _platform);
        var other = TempFileSpace.ForDataDirectory(_dataDir, tempFileLimitKiB: -1, platform: _platform);
        var block = new byte[1000];
        using BufFile f = BufFile.CreateTemp(space);
        long written = 0;
        TempFileLimitExceededException? ex = null;
        for (int i = 0; i < 200 && ex is null; i++)
        {
            block.AsSpan().Fill((byte)i);
            try
            {
                f.Write(block);
                written += block.Length;
            }
            catch (TempFileLimitExceededException e)
            {
                ex = e;
            }
        }
        Assert.That(ex, Is.Not.Null, "a 64 kB temp_file_limit stops 200,000 bytes");
        Assert.That(ex!.Message, Does.Contain("temp_file_limit (64kB)"));
        Assert.That(ex.LimitKiB, Is.EqualTo(64));
        Assert.That(space.TemporaryFilesSize, Is.LessThanOrEqualTo(64 * 1024));
        // What was written before stays readable: the file is not broken by the refusal.
        long flushed = space.TemporaryFilesSize;
        f.Seek(0);
        var back = new byte[block.Length];
        for (long at = 0; at + block.Length <= flushed; at += block.Length)
        {
            f.ReadExactly(back);
            Assert.That(back[0], Is.EqualTo((byte)(at / block.Length)), $"block at {at}");
        }
        // The limit is per space (per process): another with none is not affected.
        using (BufFile g = BufFile.CreateTemp(other))
        {
            for (int i = 0; i < 100; i++)
                g.Write(block);
            Assert.That(g.Length, Is.EqualTo(100_000));
        }
        f.Dispose();
        Assert.That(space.TemporaryFilesSize, Is.Zero);
        Assert.That(TempEntries(), Is.Empty);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string[] Abandon(TempFileSpace space)
    {
        BufFile f = BufFile.CreateTemp(space);
        f.Write(new byte[3 * 16 * 1024]);
        f.Flush();
        return [.. f.SegmentPaths];
    }

    [Test]
    public void AnAbandonedBufFileIsDeletedByItsFinaliser()
    {
        var space = TempFileSpace.ForDataDirectory(_dataDir, segmentSize: 16 * 1024, platform: _platform);
        string[] paths = Abandon(space);
        Assert.That(paths.All(File.Exists), Is.True, "the check below would prove nothing");
        for (int i = 0; i < 5 && paths.Any(File.Exists); i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.That(paths.Where(File.Exists), Is.Empty, "the finaliser deleted the segments");
        Assert.That(space.TemporaryFilesSize, Is.Zero);
    }

    private void PlantLeftovers()
    {
        Directory.CreateDirectory(TempDir);
        File.WriteAllText(Path.Combine(TempDir, "pgsql_tmp999999.1"), "killed process's sort run");
        string set = Directory.CreateDirectory(Path.Combine(TempDir, "pgsql_tmp999999.2.sharedfileset")).FullName;
        File.WriteAllText(Path.Combine(set, "worker0.0"), "a worker's file");
        File.WriteAllText(Path.Combine(TempDir, "not-a-temp-file"), "kept");
    }

    [Test]
    public void TheSupervisorRemovesLeftoverTempFilesAtStartAndAtACrashRestart()
    {
        PlantLeftovers();
        var log = new StringWriter();
        using Supervisor c = new ClusterBuilder(TestEnvironment.UniqueKey("tmpclean"))
            .WithPlatform(_platform)
            .WithDataDirectory(_dataDir)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 2))
            .WithMaxChildren(2)
            .WithLog(log)
            .WithStopGrace(TimeSpan.FromSeconds(2))
            .Build();
        Assert.That(TempEntries().Select(Path.GetFileName), Is.EqualTo(new[] { "not-a-temp-file" }), "removed at start: " + log);
        Assert.That(log.ToString(), Does.Contain("removed 2 temporary file(s)"));
        c.Start();

        // Files of a process that dies: the crash restart removes them.
        PlantLeftovers();
        BackgroundWorkerHandle crasher = c.StartChild(PostmasterWorkerCommands.Spec("crasher", backend, "crash", 0));
        crasher.WaitForStartup(TimeSpan.FromSeconds(30));
        Poll.WaitFor(() => c.CrashRestarts == 1, "the crash restart", TimeSpan.FromSeconds(30), pollMs: 20);
        Assert.That(TempEntries().Select(Path.GetFileName), Is.EqualTo(new[] { "not-a-temp-file" }), "removed at the crash restart: " + log);
    }
}

/*-------------------------------------------------------------------------
 * ExternalSortTests.cs
 *   work_mem as a spill budget: the sample external sort (ExternalSort.cs)
 *   with work_mem at its 64 kB minimum spills many runs to temporary
 *   files and returns exactly what an in-memory sort returns; with the
 *   default 4 MB the same input stays in memory; the runs' files are gone
 *   once the sort is disposed. Also the budgets' values (hash_mem =
 *   work_mem x hash_mem_multiplier, maintenance_work_mem) and ranges.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Memory;
using PgIpc.Platform;
using PgIpc.Storage;

namespace PgIpc.Tests.Storage;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ExternalSortTests(string backend)
{
    private string _dataDir = "";

    [SetUp]
    public void SetUp() => _dataDir = Directory.CreateTempSubdirectory("pgipc-sort").FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
    }

    private static List<byte[]> Input(int n)
    {
        var rnd = new Random(42);
        var tuples = new List<byte[]>(n);
        for (int i = 0; i < n; i++)
        {
            var t = new byte[rnd.Next(8, 200)];
            rnd.NextBytes(t);
            if (i % 10 == 0 && i > 0)
                t = tuples[rnd.Next(i)]; // duplicates too
            tuples.Add(t);
        }
        return tuples;
    }

    private (int Runs, long Peak, List<byte[]> Output, int FilesDuringMerge) Sort(List<byte[]> input, WorkMemSettings settings)
    {
        var space = TempFileSpace.ForDataDirectory(_dataDir, platform: PgIpcPlatform.Get(backend));
        string tmp = TempFileSpace.TempDirectoryOf(_dataDir);
        using var sort = new ExternalSort(settings.WorkMem, space);
        foreach (byte[] t in input)
            sort.Put(t);
        var output = new List<byte[]>(input.Count);
        int files = -1;
        foreach (byte[] t in sort.Sorted())
        {
            if (files < 0)
                files = Directory.Exists(tmp) ? Directory.GetFiles(tmp).Length : 0;
            output.Add(t);
        }
        int runs = sort.Runs;
        long peak = sort.PeakMemory;
        sort.Dispose();
        Assert.That(Directory.Exists(tmp) ? Directory.GetFileSystemEntries(tmp) : [], Is.Empty, "the runs' files are deleted with the sort");
        Assert.That(space.TemporaryFilesSize, Is.Zero);
        return (runs, peak, output, files);
    }

    [Test]
    public void ASmallWorkMemSpillsRunsAndSortsAsMemoryWould()
    {
        List<byte[]> input = Input(20_000);
        List<byte[]> expected = [.. input];
        expected.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));

        var small = new WorkMemSettings(workMemKiB: 64);
        var spilled = Sort(input, small);
        TestContext.Out.WriteLine($"{backend}: work_mem 64 kB: {spilled.Runs} runs, peak context {spilled.Peak} bytes");
        Assert.That(spilled.Runs, Is.GreaterThan(1), "64 kB of work_mem cannot hold ~2 MB of tuples");
        Assert.That(spilled.FilesDuringMerge, Is.EqualTo(spilled.Runs), "one temporary file per run while merging");
        Assert.That(spilled.Peak, Is.LessThanOrEqualTo(small.WorkMem.Bytes + AllocSetContext.DefaultMaxBlockSize), "memory held to the budget (plus the block that passed it)");
        Assert.That(spilled.Output.Count, Is.EqualTo(expected.Count));
        for (int i = 0; i < expected.Count; i++)
            Assert.That(spilled.Output[i], Is.EqualTo(expected[i]), $"tuple {i}");

        var roomy = Sort(input, new WorkMemSettings());
        Assert.That(roomy.Runs, Is.Zero, "4 MB of work_mem holds the input: no spill");
        Assert.That(roomy.Output, Is.EqualTo(expected));
    }

    [Test]
    public void BudgetsFollowTheSettings()
    {
        var s = new WorkMemSettings(workMemKiB: 1024, hashMemMultiplier: 2.5, maintenanceWorkMemKiB: 2048);
        Assert.That(s.WorkMem, Is.EqualTo(new MemoryBudget("work_mem", 1024 * 1024)));
        Assert.That(s.HashMem.Bytes, Is.EqualTo((long)(2.5 * 1024 * 1024)));
        Assert.That(s.HashMem.Name, Is.EqualTo("hash_mem"));
        Assert.That(s.MaintenanceWorkMem.Bytes, Is.EqualTo(2048L * 1024));
        Assert.That(new WorkMemSettings().WorkMem.Bytes, Is.EqualTo(4L << 20), "PostgreSQL's default 4 MB");
        Assert.That(new WorkMemSettings().HashMem.Bytes, Is.EqualTo(8L << 20), "hash_mem_multiplier 2.0");
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new WorkMemSettings(workMemKiB: 63));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new WorkMemSettings(hashMemMultiplier: 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new WorkMemSettings(maintenanceWorkMemKiB: 1000));

        MemoryContext c = AllocSetContext.Create(null, "budget");
        try
        {
            var b = new MemoryBudget("work_mem", 64 * 1024);
            Assert.That(b.IsExceededBy(c), Is.False);
            unsafe
            {
                for (int i = 0; i < 100; i++)
                    c.Alloc(1000);
            }
            Assert.That(b.IsExceededBy(c), Is.True, "100,000 bytes in a 64 kB budget");
            Assert.That(b.RemainingFor(c), Is.Negative);
            c.Reset();
            Assert.That(b.IsExceededBy(c), Is.False, "a reset gives the memory back");
        }
        finally
        {
            c.Delete();
        }
    }
}

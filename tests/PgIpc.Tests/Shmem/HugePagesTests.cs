/*-------------------------------------------------------------------------
 * HugePagesTests.cs
 *   ClusterBuilder.WithHugePages per backend: On without huge pages is a
 *   clear error, Try always starts, Off never uses them, and where the
 *   machine can have them (root writes vm.nr_hugepages) On gets them, the
 *   allocations view (`pgipc inspect`) says so, and destroying the cluster
 *   gives every page back and leaves nothing.
 *
 * NOTES
 *   vm.nr_hugepages is machine-wide: a test that changes it restores the
 *   value it found in TearDown. Without root the tests that need a known
 *   number of huge pages return early, saying why.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Text.Json;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Tests.Cli;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class HugePagesTests(string backend)
{
    private const long TwoMiB = 2 << 20;
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";
    private IPgIpcPlatform _platform = null!;
    private string? _savedNrHugePages;
    private readonly List<Supervisor> _supervisors = [];

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get(backend);

    [TearDown]
    public void TearDown()
    {
        foreach (Supervisor s in _supervisors)
            s.Dispose();
        _supervisors.Clear();
        if (_savedNrHugePages is not null)
        {
            File.WriteAllText(NrHugePages, _savedNrHugePages);
            _savedNrHugePages = null;
        }
    }

    private ClusterBuilder Builder(string what) => new ClusterBuilder(TestEnvironment.UniqueKey(what))
        .WithPlatform(_platform)
        .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 1))
        .WithMaxChildren(1)
        .WithLog(TextWriter.Null)
        .RequestShmem("hugepages.test", 4 << 20); // a segment of several huge pages: Try asks for them

    private Supervisor Build(ClusterBuilder b)
    {
        Supervisor s = b.Build();
        _supervisors.Add(s);
        return s;
    }

    private static bool IsRoot => OperatingSystem.IsLinux() && Environment.IsPrivilegedProcess;

    /// <summary>Sets vm.nr_hugepages (root only; the old value comes back in TearDown) and returns what the kernel made of it.</summary>
    private long SetNrHugePages(long pages)
    {
        _savedNrHugePages ??= File.ReadAllText(NrHugePages).Trim();
        File.WriteAllText(NrHugePages, pages.ToString(CultureInfo.InvariantCulture));
        return long.Parse(File.ReadAllText(NrHugePages).Trim(), CultureInfo.InvariantCulture);
    }

    private static long MemInfo(string field)
    {
        string line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return long.Parse(line[(field.Length + 1)..].Replace("kB", "", StringComparison.Ordinal).Trim(), CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Makes huge pages unavailable to a new segment on Linux: as root, no pages of the default size reserved; otherwise
    /// there must be none free already. Null when it cannot be arranged (the reason).
    /// </summary>
    private string? MakeHugePagesUnavailable()
    {
        if (!OperatingSystem.IsLinux())
            return null;
        if (IsRoot)
            SetNrHugePages(0);
        return MemInfo("HugePages_Free") == 0 ? null
            : $"this machine has {MemInfo("HugePages_Free")} free huge pages and the test is not root, so it cannot take them away";
    }

    [Test]
    public void OnWithoutHugePagesIsAClearError()
    {
        if (MakeHugePagesUnavailable() is { } why)
        {
            TestContext.Out.WriteLine($"not run: {why}");
            return;
        }
        int sysvBefore = OsObjects.CanCount ? OsObjects.SysVSegments() : 0;
        int shmBefore = OsObjects.CanCount ? OsObjects.DevShmEntries() : 0;
        Supervisor? s = null;
        PgIpcException? ex = null;
        try
        {
            s = Build(Builder("hp-on").WithHugePages(HugePages.On));
        }
        catch (PgIpcException e)
        {
            ex = e;
        }
        TestContext.Out.WriteLine(ex?.Message ?? "started with huge pages");
        switch (backend)
        {
            case "linux":
                Assert.That(ex, Is.Not.Null, "huge pages on, none reserved: Build must fail");
                Assert.That(ex!.Message, Does.Contain("SHM_HUGETLB").And.Contain("2 MiB").And.Contain("vm.nr_hugepages")
                    .And.Contain("HugePages.Try").And.Contain("ENOMEM"));
                break;
            case "posix":
                Assert.That(ex, Is.Not.Null, "the posix backend has no huge pages: On must fail");
                Assert.That(ex!.Message, Does.Contain("linux backend").And.Contain("HugePages.Try"));
                break;
            default:
                // Windows (and Wine): large pages granted, or refused with the right named.
                if (ex is null)
                    Assert.That(s!.Cluster.Segment.GetInfo().HugePages, Is.True, "On started: the segment must have large pages");
                else
                    Assert.That(ex.Message, Does.Contain("SeLockMemoryPrivilege").And.Contain("HugePages.Try"));
                break;
        }
        if (OsObjects.CanCount)
        {
            Assert.That(OsObjects.SysVSegments(), Is.EqualTo(sysvBefore), "a failed start leaves no SysV segment");
            Assert.That(OsObjects.DevShmEntries(), Is.EqualTo(shmBefore), "a failed start leaves nothing in /dev/shm");
        }
    }

    [Test]
    public void TryAlwaysStarts()
    {
        bool unavailable = MakeHugePagesUnavailable() is null && OperatingSystem.IsLinux();
        Supervisor s = Build(Builder("hp-try").WithHugePages(HugePages.Try));
        ShmemSegmentInfo info = s.Cluster.Segment.GetInfo();
        if (unavailable || backend == "posix")
        {
            Assert.That(info.HugePages, Is.False, "no huge pages to be had: normal pages");
            Assert.That(info.PageSize, Is.EqualTo(Environment.SystemPageSize));
        }
        // The default is Try too.
        Supervisor d = Build(Builder("hp-default"));
        Assert.That(d.Cluster.Segment.GetInfo().HugePages, Is.EqualTo(info.HugePages));
    }

    [Test]
    public void OffNeverUsesThem()
    {
        // With huge pages reserved (root, Linux), Try and On would take them: Off must not.
        if (IsRoot && backend == "linux" && SetNrHugePages(64) < 8)
        {
            TestContext.Out.WriteLine("not run: the kernel could not reserve 8 huge pages");
            return;
        }
        Supervisor s = Build(Builder("hp-off").WithHugePages(HugePages.Off));
        ShmemSegmentInfo info = s.Cluster.Segment.GetInfo();
        Assert.That(info.HugePages, Is.False);
        Assert.That(info.PageSize, Is.EqualTo(Environment.SystemPageSize));
        if (IsRoot && backend == "linux")
            Assert.That(MemInfo("HugePages_Free"), Is.EqualTo(MemInfo("HugePages_Total")), "Off took no huge page");
    }

    [Test]
    public void BadPageSizeIsArgumentException()
    {
        Assert.Throws<ArgumentException>(() => Builder("hp-bad").WithHugePages(HugePages.On, 3 << 20));
        Assert.Throws<ArgumentException>(() => Builder("hp-bad").WithHugePages(HugePages.Try, -1));
        Assert.Throws<ArgumentException>(() => Builder("hp-bad").WithHugePages((HugePages)7));
        if (backend == "linux" && !Directory.Exists("/sys/kernel/mm/hugepages/hugepages-4096kB"))
        {
            ArgumentException ex = Assert.Throws<ArgumentException>(() => Build(Builder("hp-bad").WithHugePages(HugePages.Try, 4 << 20)))!;
            Assert.That(ex.Message, Does.Contain("4 MiB").And.Contain("not a supported huge page size"));
        }
    }

    [Test]
    public void OnWithReservedPagesGetsThemAndGivesThemBack()
    {
        if (backend != "linux")
        {
            TestContext.Out.WriteLine($"not run: the {backend} backend's huge pages are covered by {nameof(OnWithoutHugePagesIsAClearError)}");
            return;
        }
        if (!IsRoot)
        {
            TestContext.Out.WriteLine("not run: reserving huge pages (vm.nr_hugepages) needs root");
            return;
        }
        if (HugePageSizesDefault() != TwoMiB)
        {
            TestContext.Out.WriteLine($"not run: the default huge page size is {HugePageSizesDefault()} bytes, not 2 MiB");
            return;
        }
        long reserved = SetNrHugePages(64);
        if (reserved < 16)
        {
            TestContext.Out.WriteLine($"not run: the kernel reserved only {reserved} of 64 huge pages (memory fragmented)");
            return;
        }
        int sysvBefore = OsObjects.SysVSegments();
        int shmBefore = OsObjects.DevShmEntries();
        long freeBefore = MemInfo("HugePages_Free");

        Supervisor s = Build(Builder("hp-on-ok").WithHugePages(HugePages.On, TwoMiB));
        ShmemSegmentInfo info = s.Cluster.Segment.GetInfo();
        Assert.That(info.HugePages, Is.True);
        Assert.That(info.PageSize, Is.EqualTo(TwoMiB));
        Assert.That(MemInfo("HugePages_Free"), Is.LessThan(freeBefore), "the segment's pages come from the reserve");

        // Another process attaching (pgipc inspect) sees the page size too.
        CliResult r = PgIpc.Tests.Cli.Cli.Run("inspect", s.Handle, "--json");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        using (JsonDocument doc = JsonDocument.Parse(r.Stdout))
        {
            JsonElement seg = doc.RootElement.GetProperty("segment");
            Assert.That(seg.GetProperty("huge_pages").GetBoolean(), Is.True, r.Stdout);
            Assert.That(seg.GetProperty("page_size").GetInt64(), Is.EqualTo(TwoMiB), r.Stdout);
        }
        CliResult text = PgIpc.Tests.Cli.Cli.Run("inspect", s.Handle);
        Assert.That(text.Stdout, Does.Contain("huge pages yes, page size 2 MiB"), text.ToString());

        // Try takes them too when there are some.
        Supervisor t = Build(Builder("hp-try-ok").WithHugePages(HugePages.Try));
        Assert.That(t.Cluster.Segment.GetInfo().HugePages, Is.True, "Try with huge pages reserved");
        t.Dispose();
        _supervisors.Remove(t);

        s.Dispose();
        _supervisors.Remove(s);
        Assert.That(OsObjects.SysVSegments(), Is.EqualTo(sysvBefore), "ipcs -m after destroy");
        Assert.That(OsObjects.DevShmEntries(), Is.EqualTo(shmBefore), "/dev/shm after destroy");
        Assert.That(MemInfo("HugePages_Free"), Is.EqualTo(freeBefore), "every huge page given back");
    }

    [Test]
    public void UnreservedNonDefaultSizeIsTheClearErrorAndTryFallsBack()
    {
        // A supported size other than the default (1 GiB on x86-64) with no pages of it reserved: On fails naming it.
        const long OneGiB = 1L << 30;
        if (backend != "linux" || !Directory.Exists("/sys/kernel/mm/hugepages/hugepages-1048576kB")
            || File.ReadAllText("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages").Trim() != "0")
        {
            TestContext.Out.WriteLine("not run: needs the linux backend and a 1 GiB huge page size with no free pages");
            return;
        }
        PgIpcException ex = Assert.Catch<PgIpcException>(() => Build(Builder("hp-1g").WithHugePages(HugePages.On, OneGiB)))!;
        Assert.That(ex.Message, Does.Contain("1 GiB").And.Contain("hugepages-1048576kB/nr_hugepages"));
        Supervisor s = Build(Builder("hp-1g-try").WithHugePages(HugePages.Try, OneGiB));
        Assert.That(s.Cluster.Segment.GetInfo().HugePages, Is.False, "Try with no 1 GiB pages: normal pages");
    }

    private static long HugePageSizesDefault() => MemInfo("Hugepagesize") * 1024;
}

/*-------------------------------------------------------------------------
 * ReportCommand.cs
 *   `report`: one command that runs every harness on every backend of the
 *   machine with its peers side by side, interleaved in rounds, and writes
 *   perf/results/<yyyy-MM-dd>-<os>-<cpu>.md and .json.
 *
 *     dotnet run -c Release --project perf -- report [--quick]
 *         [--backend linux|posix|windows]... [--rounds N] [--tools DIR] [--out DIR]
 *         [--only limits,micro,ring,scale,harness]
 *
 * NOTES
 *   A round is: the limits tool; the micro benchmarks (MicroRunner); for
 *   W = 1 and 2, PostgreSQL's shm_mq ring (pg-shm-mq/run.sh, one sample)
 *   right before PgIpc's ring of the same shape (RingHarness), spin off and
 *   on; the scale curves (ScaleHarness; only in the first rounds); the
 *   two-process harnesses (pingpong, contend, buffers, wal, mq, lmgr; their
 *   output is parsed where the report has a peer for it, and kept raw).
 *   So each ratio's two sides are seconds to a minute apart, and each
 *   figure's median [min..max] is over the rounds.
 *   --quick: 2 rounds (1 under Wine), shorter samples, the ring with W = 1
 *   only, the ring and scale curves on the first backend only, no mq / lmgr
 *   harness: about 2-3 minutes on 2 CPUs.
 *   The full report: 5 rounds (3 with scale curves and harnesses), every
 *   backend: about 15-20 minutes.
 *   A peer that cannot run is a skipped row with its reason, never a
 *   failure; an exception in one harness is recorded in the notes and the
 *   rest of the report still runs. The exit code is 0 unless the report
 *   could not be written.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using PgIpc.Perf.Contention;
using PgIpc.Platform;
using PgIpc.Postmaster;

namespace PgIpc.Perf.Report;

internal static partial class ReportCommand
{
    public const string Verb = "report";

    private const string RingSection = "shm_mq ring against PostgreSQL's shm_mq (test_shm_mq shape, same round)";
    private const string MicroSection = "Micro benchmarks (one process; own timing loop over the BenchmarkDotNet classes)";
    private const string HarnessSection = "Two-process harnesses";
    private const string ScaleSection = "Scale curves (ratio: over the same curve at 1 worker)";

    private sealed class Options
    {
        public bool Quick;
        public List<string> Backends = [];
        public int Rounds;
        public string? Tools;
        public string? Out;
        public HashSet<string> Only = [];

        public bool Runs(string phase) => Only.Count == 0 || Only.Contains(phase);
    }

    /// <summary>perf/ of the source tree this program was built from, when it still exists.</summary>
    public static string? ProjectDirectory()
    {
        string? dir = typeof(ReportCommand).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "PgIpc.Perf.ProjectDirectory")?.Value;
        return dir is not null && Directory.Exists(dir) ? dir : null;
    }

    /// <summary>True when this Windows process runs under Wine (ntdll exports wine_get_version).</summary>
    public static bool UnderWine()
    {
        if (!OperatingSystem.IsWindows())
            return false;
        return NativeLibrary.TryLoad("ntdll.dll", out nint h) && NativeLibrary.TryGetExport(h, "wine_get_version", out _);
    }

    public static int Run(string[] args)
    {
        const string Usage = "usage: report [--quick] [--backend linux|posix|windows]... [--rounds N] [--tools DIR] [--out DIR] [--only limits,micro,ring,scale,harness]";
        var o = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick": o.Quick = true; break;
                case "--backend" when i + 1 < args.Length: o.Backends.Add(args[++i]); break;
                case "--rounds" when i + 1 < args.Length: o.Rounds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--tools" when i + 1 < args.Length: o.Tools = args[++i]; break;
                case "--out" when i + 1 < args.Length: o.Out = args[++i]; break;
                case "--only" when i + 1 < args.Length: o.Only.UnionWith(args[++i].Split(',')); break;
                default:
                    Console.Error.WriteLine($"report: unknown argument \"{args[i]}\"; {Usage}");
                    return 2;
            }
        }
        if (o.Backends.Count == 0)
            o.Backends = OperatingSystem.IsLinux() ? ["linux", "posix"] : OperatingSystem.IsWindows() ? ["windows"] : ["posix"];
        bool wine = UnderWine();
        if (o.Rounds <= 0)
            o.Rounds = o.Quick ? (wine ? 1 : 2) : 5; // under Wine --quick is a smoke test: one round
        var data = new ReportData();
        // Under Wine a collected reflection invoke stub kills the process (Report/MicroRunner.cs); the win-x64 publish
        // turns stubs off (PgIpc.Perf.csproj). Say so when that did not happen (e.g. a build without the RID).
        if (wine && !(AppContext.TryGetSwitch("Switch.System.Reflection.ForceInterpretedInvoke", out bool interpreted) && interpreted))
        {
            data.Notes.Add("under Wine without Switch.System.Reflection.ForceInterpretedInvoke: the runtime may die in DynamicResolver+DestroyScout.Finalize (see Report/MicroRunner.cs)");
            Log($"report: {data.Notes[^1]}");
        }
        var cleanup = new List<string>();
        DateTime started = DateTime.UtcNow;
        string loadBefore = HarnessChild.LoadAverage();
        var available = new List<string>();
        foreach (string b in o.Backends)
        {
            try
            {
                IPgIpcPlatform p = PgIpcPlatform.Get(b);
                if (!p.IsSupported)
                {
                    data.Skip(MicroSection, $"backend.{b}", $"backend {b}", $"not supported on this OS");
                    continue;
                }
                available.Add(b);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or PlatformNotSupportedException)
            {
                data.Skip(MicroSection, $"backend.{b}", $"backend {b}", e.Message);
            }
        }
        Log($"report: {(o.Quick ? "quick" : "full")}, {o.Rounds} rounds, backends {string.Join(", ", available)}, {Environment.ProcessorCount} CPUs, load {loadBefore}{(wine ? ", under Wine" : "")}");

        string? tools = Peers.FindTools(o.Tools, out string looked);
        string? limits = Peers.BuildLimits(tools, out string limitsReason, cleanup);
        string? pg = Peers.PreparePostgres(tools, out string pgReason, cleanup);
        if (tools is null)
            data.Notes.Add($"Shared tools folder not found (looked at {looked}).");
        Log(limits is null ? $"report: limits skipped: {limitsReason}" : $"report: limits built in {Path.GetDirectoryName(limits)}");
        Log(pg is null ? $"report: PostgreSQL skipped: {pgReason}" : "report: PostgreSQL peer ready (pg-shm-mq/run.sh)");

        int harnessRounds = o.Quick ? 1 : Math.Min(3, o.Rounds);
        try
        {
            for (int r = 0; r < o.Rounds; r++)
            {
                Log($"report: round {r + 1}/{o.Rounds}, {DateTime.UtcNow:HH:mm:ss} UTC, load {HarnessChild.LoadAverage()}");
                if (limits is not null && o.Runs("limits"))
                    Guard(data, "limits", () => Note(data, Peers.RunLimits(limits, data, r, ["01_busypoll_pause", "02", "03", "04", "06_signal_signalfd", "07", "08", "09_spsc"])));
                foreach (string b in o.Runs("micro") ? available : [])
                    Guard(data, $"micro {b}", () => Micro(b, b == available[0], o.Quick ? 0.1 : 0.25, data, r));
                foreach (int w in !o.Runs("ring") ? [] : o.Quick ? [1] : new[] { 1, 2 })
                {
                    if (pg is not null)
                        Guard(data, $"PostgreSQL W={w}", () => Note(data, Peers.RunPostgres(pg, w, data, r)));
                    foreach (string b in o.Quick ? available.Take(1) : available)
                        foreach (bool spin in new[] { false, true })
                            Guard(data, $"ring {b} W={w} spin {spin}", () => RingHarness.Run(b, w, spin, o.Quick ? 0.15 : 0.4, data, r));
                }
                if (r < harnessRounds)
                {
                    foreach (string b in !o.Runs("scale") ? [] : o.Quick ? available.Take(1) : available)
                        foreach (string mode in new[] { "processes", "threads" })
                            Guard(data, $"scale {b} {mode}", () => ScaleHarness.Run(b, mode, o.Quick ? 0.15 : 0.3, data, r));
                    if (o.Runs("harness"))
                        Harnesses(o, available, wine, data, r);
                }
            }
        }
        finally
        {
            foreach (string d in cleanup)
            {
                try
                {
                    Directory.Delete(d, recursive: true);
                }
                catch (IOException)
                {
                }
            }
        }
        DeclareRows(data, available, o, limits is null ? limitsReason : null, pg is null ? pgReason : null, wine);
        return Write(o, data, started, loadBefore, available, wine);
    }

    private static void Log(string line)
    {
        Console.WriteLine(line);
        Console.Out.Flush();
    }

    private static void Note(ReportData data, string error)
    {
        if (error.Length > 0)
            data.Notes.Add(error);
    }

    /// <summary>Runs one step; an exception becomes a note (and a log line) instead of ending the report.</summary>
    private static void Guard(ReportData data, string what, Action step)
    {
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            step();
        }
        catch (Exception e)
        {
            string msg = $"{what} failed: {e.GetType().Name}: {e.Message}{(e.InnerException is { } inner ? $" ({inner.GetType().Name}: {inner.Message})" : "")}";
            data.Notes.Add(msg);
            Log($"report: {msg}");
        }
        Log($"report:   {what}: {Stopwatch.GetElapsedTime(t0).TotalSeconds:F1} s");
    }

    // ------------------------------------------------------------------
    // Micro benchmarks
    // ------------------------------------------------------------------

    private static void Micro(string b, bool first, double budget, ReportData data, int r)
    {
        void M(Type t, Dictionary<string, object> p, params (string Method, string Id)[] ms)
        {
            Dictionary<string, double> ns = MicroRunner.Measure(t, p, [.. ms.Select(m => m.Method)], budget);
            foreach ((string method, string id) in ms)
                data.Add($"micro.{b}.{id}", r, ns[method], "ns", false);
        }
        var be = new Dictionary<string, object> { ["Backend"] = b };
        M(typeof(Sync.SLockBenchmarks), be, ("AcquireReleasePairLoop", "slock.pair"));
        M(typeof(Sync.LWLockBenchmarks), be, ("ExclusivePairLoop", "lwlock.exclusive"), ("SharedPairLoop", "lwlock.shared"), ("NetLockPairLoop", "netlock"));
        M(typeof(Latch.LatchBenchmarks), be, ("SetLatchOnSetLatch", "latch.setlatch-on-set"));
        M(typeof(Buffers.BufferPoolBenchmarks), be, ("ReadBufferHitRelease", "buffer.hit"));
        M(typeof(Buffers.BufferMissBenchmarks), be, ("Pread8K", "buffer.pread8k"), ("ReadBufferMiss", "buffer.miss"));
        M(typeof(Sinval.SinvalBenchmarks), be, ("SendAndGetMessages", "sinval.send-get"));
        M(typeof(Lmgr.LockManagerBenchmarks), be, ("LWLockExclusivePairLoop", "lmgr.lwlock"), ("FastPathAccessSharePairLoop", "lmgr.fastpath"),
            ("MainTableStrongRelationPairLoop", "lmgr.strong"));
        foreach (int size in new[] { 64, 1024, 8192 })
            M(typeof(Mq.ShmMqBenchmarks), new Dictionary<string, object> { ["MessageSize"] = size, ["Backend"] = b },
                ("CopyBaseline", $"mq.copy.{size}"), ("Batched", $"mq.batched.{size}"), ("FlushEach", $"mq.flusheach.{size}"));
        if (first)
            M(typeof(Wal.WalBenchmarks), be, ("Insert100", "wal.insert"), ("BareWrite8KAndFdatasync", "wal.bare-fdatasync"), ("Commit", "wal.commit"));
        if (first)
            M(typeof(Memory.MemoryContextBenchmarks), new Dictionary<string, object> { ["Range"] = "Small" },
                ("NativeAllocFreePair", "memctx.native-pair"), ("PallocPfreePair", "memctx.palloc-pair"),
                ("NativeAllocFreeBatch", "memctx.native-batch"), ("PallocPfreeBatch", "memctx.palloc-batch"));
    }

    // ------------------------------------------------------------------
    // The two-process harnesses, as child processes of their own
    // ------------------------------------------------------------------

    [GeneratedRegex(@"^(\S.*?)\s+(-?[0-9.]+) (us|ns|Mops/s|M msg/s|M rec/s|k commits/s|fsyncs/commit) \[")]
    private static partial Regex HarnessLine();

    private static void Harnesses(Options o, List<string> backends, bool wine, ReportData data, int r)
    {
        var runs = new List<(string Verb, string[] Args, string Key)>();
        foreach (string b in o.Quick ? backends.Take(1) : backends)
        {
            if (b != "windows")
                runs.Add(("pingpong", ["--backend", b, "--rounds", o.Quick ? "2000" : "10000", "--samples", o.Quick ? "3" : "5"], $"pingpong.{b}"));
            if (b != "windows" || !wine)
                runs.Add(("contend", ["--backend", b, "--seconds", o.Quick ? "1" : "2", "--samples", o.Quick ? "3" : "5"], $"contend.{b}"));
            if (b != "windows")
                runs.Add(("buffers", ["--backend", b, "--workload", "hit", "--seconds", o.Quick ? "1" : "2", "--samples", o.Quick ? "2" : "3"], $"buffers.{b}"));
            if (b != "windows")
                runs.Add(("wal", ["--backend", b, "--seconds", o.Quick ? "0.5" : "1", "--samples", o.Quick ? "2" : "3"], $"wal.{b}"));
            if (!o.Quick && b != "windows")
            {
                runs.Add(("mq", ["--backend", b, "--seconds", "1", "--spin", "both"], $"mq.{b}"));
                runs.Add(("lmgr", ["--backend", b, "--seconds", "1"], $"lmgr.{b}"));
            }
        }
        foreach ((string verb, string[] args, string key) in runs)
        {
            Guard(data, $"{verb} {string.Join(' ', args)}", () =>
            {
                (string file, List<string> argv) = ThisProgram.Command(verb, args);
                (int code, string output) = Peers.Run(file, argv, TimeSpan.FromSeconds(o.Quick ? 90 : 240));
                data.RawOutputs.Add(($"round {r + 1}: {verb} {string.Join(' ', args)} (exit {code})", output));
                if (code != 0)
                    data.Notes.Add($"{verb} {string.Join(' ', args)} exited {code}");
                foreach (string line in output.Split('\n'))
                {
                    Match m = HarnessLine().Match(line);
                    if (!m.Success)
                        continue;
                    string what = Slug(m.Groups[1].Value);
                    data.Add($"harness.{key}.{what}", r, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), m.Groups[3].Value,
                        higherIsBetter: m.Groups[3].Value.EndsWith("/s", StringComparison.Ordinal));
                }
            });
        }
    }

    private static string Slug(string s)
        => Regex.Replace(s.ToLowerInvariant(), "[^a-z0-9]+", "-").Trim('-');
}

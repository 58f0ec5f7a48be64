/*-------------------------------------------------------------------------
 * ReportCommand.Rows.cs
 *   Which figure stands beside which peer in the report, and writing the
 *   .md and .json files.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using PgIpc.Perf.Contention;

namespace PgIpc.Perf.Report;

internal static partial class ReportCommand
{
    private static void DeclareRows(ReportData data, List<string> backends, Options o, string? limitsMissing, string? pgMissing, bool wine)
    {
        const string Pg = "PostgreSQL 15 shm_mq, same ring";
        foreach (string b in o.Quick ? backends.Take(1) : backends)
        {
            foreach (int w in o.Quick ? [1] : new[] { 1, 2 })
            {
                foreach (string spin in new[] { "off", "on" })
                {
                    foreach (int size in RingHarness.PipelinedSizes)
                    {
                        string id = $"ring.{b}.w{w}.pipelined.{size}.{spin}";
                        data.Row(RingSection, id, $"W={w}, pipelined {SizeName(size)}, spin {spin}, {b}", id, $"pg.w{w}.pipelined.{size}", Pg).PeerMissing = pgMissing;
                    }
                    foreach (int size in RingHarness.RoundTripSizes)
                    {
                        string id = $"ring.{b}.w{w}.rt.{size}.{spin}";
                        data.Row(RingSection, id, $"W={w}, one in flight {SizeName(size)} round trip, spin {spin}, {b}", id, $"pg.w{w}.rt.{size}", Pg).PeerMissing = pgMissing;
                    }
                }
            }
        }
        foreach (string b in backends)
        {
            string m = $"micro.{b}";
            void R(string id, string label, string? peer = null, string? peerLabel = null, bool limitsPeer = false)
            {
                if (data.Get($"{m}.{id}") is null)
                    return;
                ReportRow row = data.Row(MicroSection, $"{m}.{id}", $"{label}, {b}", $"{m}.{id}", peer, peerLabel);
                if (limitsPeer)
                    row.PeerMissing = limitsMissing;
            }
            R("slock.pair", "spinlock acquire + release pair", "limits.07_cas_acq_store_rel_pair", "limits 07_cas_acq_store_rel_pair", true);
            R("lwlock.exclusive", "LWLock exclusive pair", "limits.07_cas_acq_lock_sub_rel_pair", "limits 07_cas_acq_lock_sub_rel_pair", true);
            R("lwlock.shared", "LWLock shared pair", "limits.07_cas_acq_lock_sub_rel_pair", "limits 07_cas_acq_lock_sub_rel_pair", true);
            if (data.Get($"{m}.netlock") is not null)
                data.Row(MicroSection, $"{m}.lwlock.exclusive.vs-net", $"LWLock exclusive pair, {b}", $"{m}.lwlock.exclusive", $"{m}.netlock", ".NET Lock pair (process-local)");
            R("latch.setlatch-on-set", "SetLatch on a set latch", "limits.07_cas_acq_store_rel_pair", "limits 07_cas_acq_store_rel_pair (one locked instruction)", true);
            R("buffer.hit", "ReadBuffer hit + ReleaseBuffer");
            R("buffer.miss", "ReadBuffer miss (evict, 8 KiB read, checksum)", $"{m}.buffer.pread8k", "8 KiB pread of the same blocks");
            R("sinval.send-get", "sinval send + get, per message");
            R("lmgr.fastpath", "lock manager fast path, AccessShare pair", $"{m}.lmgr.lwlock", "LWLock exclusive pair");
            R("lmgr.strong", "lock manager strong relation lock pair", $"{m}.lmgr.lwlock", "LWLock exclusive pair");
            foreach (int size in new[] { 64, 1024, 8192 })
            {
                R($"mq.batched.{size}", $"shm_mq one process, {SizeName(size)}, batched", $"{m}.mq.copy.{size}", "copy in + out");
                R($"mq.flusheach.{size}", $"shm_mq one process, {SizeName(size)}, flush each", $"{m}.mq.copy.{size}", "copy in + out");
            }
            R("wal.insert", "WAL insert of a 100-byte record, no flush (write-out of full buffers and checkpoints amortised)");
            R("wal.commit", "WAL commit: 100-byte record inserted + XLogFlush", $"{m}.wal.bare-fdatasync", "8 KiB pwrite + fdatasync, same directory");
            R("memctx.palloc-pair", "palloc + pfree pair, 16-256 B", $"{m}.memctx.native-pair", "NativeMemory.Alloc + Free");
            R("memctx.palloc-batch", "palloc x1024 then pfree, 16-256 B", $"{m}.memctx.native-batch", "NativeMemory, same batch");
        }

        // Harness figures: a few stand beside a limits line; every other parsed line is a row of its own.
        foreach (Figure f in data.Figures.Values.Where(f => f.Id.StartsWith("harness.", StringComparison.Ordinal)).ToList())
        {
            string id = f.Id;
            (string Peer, string Label, string Suffix)[] peers = id switch
            {
                _ when Regex.IsMatch(id, @"^harness\.pingpong\.[a-z]+\.latch-linux") =>
                    [("limits.03_eventfd_epoll_rt", "limits 03_eventfd_epoll_rt", "vs-eventfd"), ("limits.06_signal_signalfd_epoll_rt", "limits 06_signal_signalfd_epoll_rt (PostgreSQL's design)", "vs-signalfd")],
                _ when Regex.IsMatch(id, @"^harness\.pingpong\.[a-z]+\.latch-posix") => [("limits.04_pipe_poll_rt", "limits 04_pipe_poll_rt", "vs-pipe-poll")],
                _ when Regex.IsMatch(id, @"^harness\.pingpong\.[a-z]+\.net-anonymous-pipe") => [("limits.04_pipe_rt", "limits 04_pipe_rt", "vs-pipe")],
                _ when Regex.IsMatch(id, @"^harness\.contend\.[a-z]+\.lwlock-exclusive") => [("limits.08_contended_pshared_mutex", "limits 08_contended_pshared_mutex", "vs-mutex")],
                _ => [],
            };
            Match wal = Regex.Match(id, @"^harness\.wal\.([a-z]+)\.insert-two-processes$");
            if (wal.Success)
            {
                data.Row(HarnessSection, id, id["harness.".Length..], id);
                data.Row(HarnessSection, $"harness.wal.{wal.Groups[1].Value}.insert-two-vs-one", $"WAL insert, two processes together against one, {wal.Groups[1].Value}",
                    id, $"harness.wal.{wal.Groups[1].Value}.insert-one-process", "one process, same run");
                continue;
            }
            if (peers.Length == 0)
            {
                data.Row(HarnessSection, id, id["harness.".Length..], id);
                continue;
            }
            foreach ((string peer, string label, string suffix) in peers)
            {
                string head = Regex.Replace(id, @"^harness\.(pingpong|contend)\.([a-z]+)\..*$", "harness.$1.$2");
                data.Row(HarnessSection, $"{head}.{suffix}", id["harness.".Length..], id, peer, label).PeerMissing = limitsMissing;
            }
        }

        foreach (Figure f in data.Figures.Values.Where(f => f.Id.StartsWith("scale.", StringComparison.Ordinal)).OrderBy(f => f.Id, StringComparer.Ordinal).ToList())
        {
            string[] p = f.Id.Split('.'); // scale.<backend>.<mode>.<kind>.<n>[.minshare|.maxshare]
            string what = p[3] switch { "lwlock-x" => "LWLock exclusive", "lwlock-s" => "LWLock shared", "bufhit" => "ReadBuffer hit (own 64 pages)", _ => "shm_mq pairs, 1 KiB pipelined" };
            string unit = p[3] == "mq" ? "pairs" : p[2];
            if (p.Length == 6)
            {
                data.Row(ScaleSection, f.Id, $"fairness: {(p[5] == "minshare" ? "smallest" : "largest")} share of acquisitions x N, {what}, {p[4]} {p[2]}, {p[1]}", f.Id);
                continue;
            }
            string baseId = $"scale.{p[1]}.{p[2]}.{p[3]}.1";
            data.Row(ScaleSection, f.Id, $"{what}, {p[4]} {unit}{(p[3] == "mq" ? $" ({p[2]})" : "")}, {p[1]}", f.Id, p[4] == "1" ? null : baseId, p[4] == "1" ? null : "same at 1");
        }
    }

    private static string SizeName(int size) => size >= 1024 ? $"{size / 1024} KiB" : $"{size} B";

    private static string CpuModel()
    {
        try
        {
            if (OperatingSystem.IsLinux())
            {
                string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
                if (line is not null)
                    return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
            }
        }
        catch (IOException)
        {
        }
        // Windows: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD"; the vendor after the comma adds nothing to the name.
        return Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER")?.Split(',')[0] ?? RuntimeInformation.ProcessArchitecture.ToString();
    }

    private static int Write(Options o, ReportData data, DateTime started, string loadBefore, List<string> backends, bool wine)
    {
        DateTime ended = DateTime.UtcNow;
        string os = OperatingSystem.IsLinux() ? "linux" : OperatingSystem.IsWindows() ? (wine ? "windows-wine" : "windows") : OperatingSystem.IsMacOS() ? "macos" : "other";
        string cpu = CpuModel();
        string cpuSlug = Regex.Replace(cpu.ToLowerInvariant().Replace("(r)", "", StringComparison.Ordinal).Replace("(tm)", "", StringComparison.Ordinal), "[^a-z0-9]+", "-").Trim('-');
        if (cpuSlug.Length > 40)
            cpuSlug = cpuSlug[..40].TrimEnd('-');
        string name = $"{started:yyyy-MM-dd}-{os}-{cpuSlug}{(o.Quick ? "-quick" : "")}";
        string dir = o.Out ?? (ProjectDirectory() is { } proj ? Path.Combine(proj, "results") : Path.Combine(Directory.GetCurrentDirectory(), "perf-results"));
        Directory.CreateDirectory(dir);
        Dictionary<string, Target> targets = TargetTable.Load();
        int n = Environment.ProcessorCount;
        var header = new List<string>
        {
            $"# PgIpc performance report: {started:yyyy-MM-dd}, {os}, {cpu}",
            "",
            $"`dotnet run -c Release --project perf -- report{(o.Quick ? " --quick" : "")}{string.Concat(o.Backends.Select(b => $" --backend {b}"))}`, " +
                $"{started:yyyy-MM-dd HH:mm}-{ended:HH:mm} UTC ({(ended - started).TotalMinutes:F1} min).",
            "",
            $"- Machine: {RuntimeInformation.OSDescription}, {cpu}, **{n} CPUs**; .NET {Environment.Version}, {RuntimeInformation.ProcessArchitecture}; " +
                $"load average {loadBefore} before, {HarnessChild.LoadAverage()} after.",
            $"- Backends: {string.Join(", ", backends)}; {o.Rounds} rounds{(o.Quick ? " (quick)" : "")}. Every figure is the median [min..max] over the rounds it ran in; " +
                "each ratio is figure / peer within one round (the two sides seconds to a minute apart), then the median [min..max] of those ratios. " +
                "Only ratios mean anything across machines and runs: this kind of VM switches between fast and slow kernel wake-ups (about 10 and 50 us) from one minute to the next.",
            $"- PostgreSQL: {(Peers.PostgresVersion is { } v ? $"{v.Split(',')[0]} via ../shared/tools/pg-shm-mq/run.sh (one sample per round; fixed counts: 1,000,000 messages at 64 B and 1 KiB, 200,000 at 8 KiB, 20,000 round trips)" : "not run (see the skipped rows)")}. " +
                "Both sides in test_shm_mq's ring: leader -> W workers -> leader, every worker receives and re-sends each message with a blocking, force-flushed send; " +
                "pipelined = the leader's nowait sends and receives with force flush, sleeping on its latch when neither moved; one in flight = blocking send then blocking receive.",
            "- Micro benchmarks: the BenchmarkDotNet classes of perf/, run in-process by the report's own timing loop (warm-up 30 ms, 5 batches, median; no empty-call subtraction), " +
                "not by BenchmarkDotNet, whose start-up and pilot runs do not fit the 3-minute --quick budget. Figures are per operation of the loop methods.",
            $"- Scale curves: 1, 2, 4, 8 workers as processes and as threads of one process. **This machine has {n} CPUs: points above {n} workers are oversubscribed** " +
                "(they show what the code does when workers outnumber CPUs and are descheduled, not how it scales).",
        };
        if (wine)
            header.Add("- **Windows backend under Wine: a smoke test. Figures under Wine are not representative of Windows** (Wine's NT emulation, not the Windows kernel); the limits tool and PostgreSQL do not run there.");
        if (Environment.GetEnvironmentVariable("PGIPC_PERF_NOTE") is { Length: > 0 } note)
            header.Add($"- {note}");
        string md = ReportWriter.Markdown(data, targets, header);
        var meta = new Dictionary<string, string>
        {
            ["started"] = started.ToString("O", CultureInfo.InvariantCulture),
            ["ended"] = ended.ToString("O", CultureInfo.InvariantCulture),
            ["os"] = os,
            ["osDescription"] = RuntimeInformation.OSDescription,
            ["cpu"] = cpu,
            ["cpus"] = n.ToString(CultureInfo.InvariantCulture),
            ["runtime"] = Environment.Version.ToString(),
            ["quick"] = o.Quick ? "true" : "false",
            ["rounds"] = o.Rounds.ToString(CultureInfo.InvariantCulture),
            ["backends"] = string.Join(",", backends),
            ["wine"] = wine ? "true" : "false",
            ["loadBefore"] = loadBefore,
            ["loadAfter"] = HarnessChild.LoadAverage(),
        };
        string json = ReportWriter.Json(data, targets, meta);
        string mdPath = Path.Combine(dir, name + ".md"), jsonPath = Path.Combine(dir, name + ".json");
        File.WriteAllText(mdPath, md);
        File.WriteAllText(jsonPath, json);
        Log($"report: wrote {mdPath} and {jsonPath} ({(ended - started).TotalMinutes:F1} min)");
        return 0;
    }
}

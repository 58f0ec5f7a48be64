/*-------------------------------------------------------------------------
 * ShmMqHarness.cs
 *   shm_mq between two processes: the parent and one child it starts (this
 *   same program, verb "mq-child"), each way a 64 KiB ring, reproducing the
 *   two functions of PostgreSQL's test_shm_mq module.
 *
 *     dotnet run -c Release --project perf -- mq [--backend linux|posix] [--seconds 2]
 *         [--spin on|off|both] [--limits path/to/limits]
 *
 * NOTES
 *   The segment is a latch cluster (ProcArray + ProcSignal, as
 *   PerfLatchCluster) plus two queues of ShmMq.SizeFor(65536) bytes:
 *   "perf.mq.p2c" (parent sends, child receives) and "perf.mq.c2p". The
 *   parent joins and takes its sides, starts the child with the segment's
 *   handle; the child attaches, joins and takes the other sides. Both
 *   processes' handles are given the other's pid as IShmMqPeer, so a dead
 *   peer reads as Detached instead of a hang.
 *
 *   The child is driven by command messages on p2c (24 bytes: kind, size,
 *   count), so one child serves every measurement:
 *     pipelined   (test_shm_mq_pipelined, verify off, one direction) the
 *                 parent sends count messages of size bytes with
 *                 forceFlush false as fast as it can, then Flush; the child
 *                 receives them all (no verification) and answers with one
 *                 8-byte message. Time: from the parent's first send to its
 *                 receipt of that answer. msg/s and payload GB/s.
 *   pipelined, copied out   the same, but the child copies each message
 *                 out of the ring into a buffer (as the limits tool's ring
 *                 and the socket's reader do): the like-for-like line.
 *     roundtrip   (test_shm_mq with one worker) one message in flight: the
 *                 parent sends one (forceFlush true), the child receives it
 *                 and sends it back on c2p, the parent receives it. Time per
 *                 round trip in microseconds.
 *     spin        sets the child's handles' SpinBeforeSleep (size 1 on,
 *                 0 off); the parent sets its own the same way. With
 *                 --spin both (the default) every shm_mq figure is taken
 *                 with spin off, then on, in the same child.
 *   The parent detaching from p2c ends the child.
 *
 *   Idle receiver: right after the one-in-flight samples (the child's
 *   receive has just been spinning successfully) the parent sends nothing
 *   for IdleSeconds; we report the child process's CPU time over that
 *   stretch (all its threads, from the OS) as a share of the stretch, and
 *   whether its slot shows it asleep in the latch wait (MessageQueueReceive).
 *
 *   --limits runs the C limits tool (`limits ring pipe socket`) before and
 *   after and prints its lines; the higher of its two 09_spsc_ring_8KiB
 *   medians is the 8 KiB target's reference. The run ends with a markdown table of every figure and the
 *   issue's targets, to paste.
 *
 *   Peers, same processes' shape, same pipelined transfer: a .NET anonymous
 *   pipe and a Unix domain stream socket (as PingPongHarness: the pipe's
 *   client ends inherited by the child; the socket's path under the temp
 *   directory). The parent writes a 16-byte header (size, count), then one
 *   Write per message; the child reads each message with ReadExactly (one
 *   receive per message, as shm_mq) and answers with 8 bytes. count 0 stops.
 *
 *   Every figure: one warm-up transfer (64 MiB, at least 1000 messages),
 *   whose rate sizes 5 samples of about --seconds / 5 each; we report the
 *   median and the range. The parent kills the child in a finally if it
 *   has not exited, destroys the segment and deletes the socket file, so
 *   nothing is left in /dev/shm, `ipcs -m` or /tmp.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipes;
using System.Net.Sockets;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;

namespace PgIpc.Perf.Contention;

public static class ShmMqHarness
{
    public const string ParentVerb = "mq";
    public const string ChildVerb = "mq-child";

    private const long RingSize = 65536;
    private const string P2CName = "perf.mq.p2c";
    private const string C2PName = "perf.mq.c2p";
    private const long CmdPipelined = 1, CmdRoundTrip = 2, CmdSpin = 3, CmdPipelinedCopy = 4;
    private const int Samples = 5;
    private const double IdleSeconds = 1.0;
    private static readonly int[] s_sizes = [64, 1024, 8192, 65536];
    private static readonly int[] s_rtSizes = [64, 8192];
    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    // Every figure of the run, by key ("shm off 8192", "rt on 64", "pipe 8192", "idle on", ...), for the summary.
    private static readonly Dictionary<string, double[]> s_figures = [];

    /// <summary>Entry point of <c>mq</c>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        const string Usage = "usage: mq [--backend linux|posix] [--seconds 2] [--spin on|off|both] [--limits path/to/limits]";
        string backend = "linux", spin = "both";
        string? limits = null;
        double seconds = 2;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length: backend = args[++i]; break;
                case "--seconds" when i + 1 < args.Length: seconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--spin" when i + 1 < args.Length: spin = args[++i]; break;
                case "--limits" when i + 1 < args.Length: limits = args[++i]; break;
                default:
                    Console.Error.WriteLine($"mq: unknown argument \"{args[i]}\"; {Usage}");
                    return 2;
            }
        }
        if (backend is not ("linux" or "posix") || !(seconds > 0) || spin is not ("on" or "off" or "both"))
        {
            Console.Error.WriteLine($"mq: expected --backend linux|posix, --seconds > 0 and --spin on|off|both (got {backend}, {seconds}, {spin}); {Usage}");
            return 2;
        }
        bool[] spins = spin switch { "on" => [true], "off" => [false], _ => [false, true] };
        string started = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture);
        string loadBefore = HarnessChild.LoadAverage();
        Console.WriteLine($"mq: 2 processes, ring {RingSize} B each way, {Samples} samples of ~{seconds / Samples:F2} s per figure, {Environment.ProcessorCount} CPUs, load {loadBefore}");
        double limitsRing8K = limits is null ? double.NaN : RunLimits(limits, "before");
        RunShmMq(backend, seconds, spins);
        RunPipe(seconds);
        RunSocket(seconds);
        if (limits is not null)
            limitsRing8K = Math.Max(limitsRing8K, RunLimits(limits, "after")); // the quieter of the two: the stricter target
        string loadAfter = HarnessChild.LoadAverage();
        Console.WriteLine($"mq: done, load {loadAfter}");
        PrintSummary(backend, started, loadBefore, loadAfter, limitsRing8K);
        return 0;
    }

    /// <summary>Entry point of <c>mq-child</c>.</summary>
    public static int Child(string[] args)
    {
        switch (args.Length > 0 ? args[0] : "")
        {
            case "shm" when args.Length == 3:
                ShmChild(args[1], int.Parse(args[2], CultureInfo.InvariantCulture));
                return 0;
            case "pipe" when args.Length == 3:
                {
                    using var fromParent = new AnonymousPipeClientStream(PipeDirection.In, args[1]);
                    using var toParent = new AnonymousPipeClientStream(PipeDirection.Out, args[2]);
                    StreamChild(fromParent, toParent);
                    return 0;
                }
            case "socket" when args.Length == 2:
                {
                    using var conn = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    conn.Connect(new UnixDomainSocketEndPoint(args[1]));
                    using var s = new NetworkStream(conn, ownsSocket: false);
                    StreamChild(s, s);
                    return 0;
                }
            default:
                Console.Error.WriteLine($"mq-child: bad arguments \"{string.Join(' ', args)}\"");
                return 2;
        }
    }

    // ------------------------------------------------------------------
    // shm_mq
    // ------------------------------------------------------------------

    private static void RunShmMq(string backend, double seconds, bool[] spins)
    {
        long qsize = ShmMq.SizeFor(RingSize);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(s_options.TotalProcs))
            .RequestAddinShmemSpace(P2CName, qsize)
            .RequestAddinShmemSpace(C2PName, qsize);
        ShmemSegment? segment = PerfSegments.Create("mq", backend, sizes);
        Process? child = null;
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            ProcSignal.Init(segment, procs, out _);
            ShmMq p2c = ShmMq.Create(segment.InitStruct(P2CName, qsize, out _));
            ShmMq c2p = ShmMq.Create(segment.InitStruct(C2PName, qsize, out _));
            using Participant me = procs.Join();
            p2c.SetSender(me);
            c2p.SetReceiver(me);
            child = HarnessChild.Start(ChildVerb, ["shm", segment.Handle.ToString(), Environment.ProcessId.ToString(CultureInfo.InvariantCulture)]);
            var peer = new ShmMqProcessPeer(segment.Platform.Processes, child.Id);
            using ShmMqHandle tx = p2c.Attach(me, peer);
            using ShmMqHandle rx = c2p.Attach(me, peer);
            Console.WriteLine($"shm_mq, {backend} ({PgIpcPlatform.Get(backend).Latches.GetType().Name}), child {child.Id}");

            foreach (bool spin in spins)
            {
                string on = spin ? "on" : "off";
                string what = $"shm_mq spin {on}";
                SendCommand(tx, CmdSpin, spin ? 1 : 0, 0);
                tx.SpinBeforeSleep = rx.SpinBeforeSleep = spin;
                foreach (int size in s_sizes)
                {
                    byte[] msg = NewMessage(size);
                    double[] rate = Measure(seconds, size, n => ShmPipelined(tx, rx, msg, n, copy: false));
                    ReportRate($"{what} pipelined", size, rate);
                    s_figures[$"shm {on} {size}"] = rate;
                }
                foreach (int size in s_sizes)
                {
                    byte[] msg = NewMessage(size);
                    double[] rate = Measure(seconds, size, n => ShmPipelined(tx, rx, msg, n, copy: true));
                    ReportRate($"{what} pipelined, copied out", size, rate);
                    s_figures[$"copy {on} {size}"] = rate;
                }
                foreach (int size in s_rtSizes)
                {
                    byte[] msg = NewMessage(size);
                    long t0 = Stopwatch.GetTimestamp();
                    ShmRoundTrips(tx, rx, msg, 2000);
                    double per = Math.Max(Stopwatch.GetElapsedTime(t0).TotalSeconds, 1e-4) / 2000;
                    long rounds = Math.Max(1000, (long)(seconds / Samples / per));
                    var us = new double[Samples];
                    for (int s = 0; s < Samples; s++)
                    {
                        long t1 = Stopwatch.GetTimestamp();
                        ShmRoundTrips(tx, rx, msg, rounds);
                        us[s] = Stopwatch.GetElapsedTime(t1).TotalMicroseconds / rounds;
                    }
                    ReportUs($"{what} one in flight", size, rounds, us);
                    s_figures[$"rt {on} {size}"] = us;
                }
                // The child has just answered the last round trip and waits for the next command: an idle receiver.
                (double share, bool asleep) = IdleReceiver(procs, child);
                Console.WriteLine($"{what} idle receiver: {share * 100,6:F2} % of a CPU over {IdleSeconds:F1} s, asleep in the latch wait: {(asleep ? "yes" : "NO")}");
                s_figures[$"idle {on}"] = [share * 100];
                s_figures[$"asleep {on}"] = [asleep ? 1 : 0];
            }
            tx.Detach();
            HarnessChild.WaitExit(child, "mq");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            PerfSegments.Destroy(ref segment);
        }
    }

    /// <summary>
    /// The child's CPU time over <see cref="IdleSeconds"/> while we send nothing, as a share of the stretch, and
    /// whether its slot showed it in the shm_mq receive wait at the end.
    /// </summary>
    private static (double Share, bool Asleep) IdleReceiver(ProcArray procs, Process child)
    {
        child.Refresh();
        TimeSpan cpu0 = child.TotalProcessorTime;
        long t0 = Stopwatch.GetTimestamp();
        Thread.Sleep(TimeSpan.FromSeconds(IdleSeconds));
        child.Refresh();
        TimeSpan cpu1 = child.TotalProcessorTime;
        double stretch = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        bool asleep = procs.GetProcs().Any(p => p.Pid == child.Id && p.WaitEvent == ShmMqHandle.ReceiveWaitEvent);
        return ((cpu1 - cpu0).TotalSeconds / stretch, asleep);
    }

    private static void SendCommand(ShmMqHandle tx, long kind, long size, long count)
    {
        Span<byte> cmd = stackalloc byte[24];
        BinaryPrimitives.WriteInt64LittleEndian(cmd, kind);
        BinaryPrimitives.WriteInt64LittleEndian(cmd[8..], size);
        BinaryPrimitives.WriteInt64LittleEndian(cmd[16..], count);
        Check(tx.Send(cmd, nowait: false, forceFlush: true), "send command");
    }

    private static void ShmPipelined(ShmMqHandle tx, ShmMqHandle rx, byte[] msg, long n, bool copy)
    {
        SendCommand(tx, copy ? CmdPipelinedCopy : CmdPipelined, msg.Length, n);
        for (long i = 0; i < n; i++)
            Check(tx.Send(msg, nowait: false, forceFlush: false), "send");
        tx.Flush();
        Check(rx.Receive(out ReadOnlySpan<byte> ack), "receive answer");
        long got = BinaryPrimitives.ReadInt64LittleEndian(ack);
        if (got != n)
            throw new InvalidOperationException($"mq child received {got} messages, expected {n}");
    }

    private static void ShmRoundTrips(ShmMqHandle tx, ShmMqHandle rx, byte[] msg, long n)
    {
        SendCommand(tx, CmdRoundTrip, msg.Length, n);
        for (long i = 0; i < n; i++)
        {
            Check(tx.Send(msg, nowait: false, forceFlush: true), "send");
            Check(rx.Receive(out ReadOnlySpan<byte> back), "receive");
            if (back.Length != msg.Length)
                throw new InvalidOperationException($"mq round trip came back with {back.Length} bytes, sent {msg.Length}");
        }
    }

    private static void ShmChild(string handle, int parentPid)
    {
        ShmemSegment segment = ShmemSegment.Attach(handle);
        try
        {
            ProcArray procs = ProcArray.Attach(segment);
            if (!segment.TryFindStruct(P2CName, out ShmemRegion r1) || !segment.TryFindStruct(C2PName, out ShmemRegion r2))
                throw new InvalidOperationException($"segment {handle} has no {P2CName} / {C2PName}");
            ShmMq p2c = ShmMq.Open(r1), c2p = ShmMq.Open(r2);
            using Participant me = procs.Join();
            p2c.SetReceiver(me);
            c2p.SetSender(me);
            var peer = new ShmMqProcessPeer(segment.Platform.Processes, parentPid);
            using ShmMqHandle rx = p2c.Attach(me, peer);
            using ShmMqHandle tx = c2p.Attach(me, peer);
            Span<byte> ack = stackalloc byte[8];
            byte[] copyBuffer = new byte[s_sizes[^1]];
            for (;;)
            {
                if (rx.Receive(out ReadOnlySpan<byte> cmd) != ShmMqResult.Success)
                    break; // the parent detached: done
                if (cmd.Length != 24)
                    throw new InvalidOperationException($"mq child: command of {cmd.Length} bytes");
                long kind = BinaryPrimitives.ReadInt64LittleEndian(cmd);
                long size = BinaryPrimitives.ReadInt64LittleEndian(cmd[8..]);
                long count = BinaryPrimitives.ReadInt64LittleEndian(cmd[16..]);
                if (kind == CmdSpin)
                {
                    rx.SpinBeforeSleep = tx.SpinBeforeSleep = size != 0;
                }
                else if (kind is CmdPipelined or CmdPipelinedCopy)
                {
                    long got = 0;
                    bool copy = kind == CmdPipelinedCopy;
                    for (long i = 0; i < count; i++)
                    {
                        Check(rx.Receive(out ReadOnlySpan<byte> m), "child receive");
                        if (copy)
                            m.CopyTo(copyBuffer);
                        got++;
                    }
                    BinaryPrimitives.WriteInt64LittleEndian(ack, got);
                    Check(tx.Send(ack, nowait: false, forceFlush: true), "child send answer");
                }
                else
                {
                    for (long i = 0; i < count; i++)
                    {
                        Check(rx.Receive(out ReadOnlySpan<byte> m), "child receive");
                        Check(tx.Send(m, nowait: false, forceFlush: true), "child send");
                    }
                }
            }
        }
        finally
        {
            segment.Dispose();
        }
    }

    private static void Check(ShmMqResult r, string what)
    {
        if (r != ShmMqResult.Success)
            throw new InvalidOperationException($"mq: {what} returned {r}");
    }

    // ------------------------------------------------------------------
    // Peers: .NET anonymous pipe, Unix domain socket
    // ------------------------------------------------------------------

    private static void RunPipe(double seconds)
    {
        Process? child = null;
        using var toChild = new AnonymousPipeServerStream(PipeDirection.Out, HandleInheritability.Inheritable);
        using var fromChild = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.Inheritable);
        try
        {
            child = HarnessChild.Start(ChildVerb, ["pipe", toChild.GetClientHandleAsString(), fromChild.GetClientHandleAsString()]);
            toChild.DisposeLocalCopyOfClientHandle();
            fromChild.DisposeLocalCopyOfClientHandle();
            StreamAll("pipe", ".NET anonymous pipe pipelined", toChild, fromChild, seconds);
            HarnessChild.WaitExit(child, "mq");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
        }
    }

    private static void RunSocket(double seconds)
    {
        string path = Path.Combine(Path.GetTempPath(), $"pgipc-perf-mq-{Environment.ProcessId}.sock");
        Process? child = null;
        try
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);
            child = HarnessChild.Start(ChildVerb, ["socket", path]);
            using Socket conn = listener.Accept();
            using var s = new NetworkStream(conn, ownsSocket: false);
            StreamAll("socket", ".NET Unix domain socket pipelined", s, s, seconds);
            HarnessChild.WaitExit(child, "mq");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            File.Delete(path);
        }
    }

    private static void StreamAll(string key, string what, Stream output, Stream input, double seconds)
    {
        foreach (int size in s_sizes)
        {
            byte[] msg = NewMessage(size);
            double[] rate = Measure(seconds, size, n => StreamPipelined(output, input, msg, n));
            ReportRate(what, size, rate);
            s_figures[$"{key} {size}"] = rate;
        }
        Span<byte> stop = stackalloc byte[16];
        output.Write(stop); // count 0: the child leaves
        output.Flush();
    }

    private static void StreamPipelined(Stream output, Stream input, byte[] msg, long n)
    {
        Span<byte> hdr = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(hdr, msg.Length);
        BinaryPrimitives.WriteInt64LittleEndian(hdr[8..], n);
        output.Write(hdr);
        for (long i = 0; i < n; i++)
            output.Write(msg);
        output.Flush();
        input.ReadExactly(hdr[..8]);
        long got = BinaryPrimitives.ReadInt64LittleEndian(hdr);
        if (got != n)
            throw new InvalidOperationException($"mq stream child received {got} messages, expected {n}");
    }

    private static void StreamChild(Stream input, Stream output)
    {
        Span<byte> hdr = stackalloc byte[16];
        byte[] buf = new byte[s_sizes[^1]];
        for (;;)
        {
            input.ReadExactly(hdr);
            long size = BinaryPrimitives.ReadInt64LittleEndian(hdr);
            long count = BinaryPrimitives.ReadInt64LittleEndian(hdr[8..]);
            if (count == 0)
                return;
            Span<byte> m = buf.AsSpan(0, (int)size);
            long got = 0;
            for (long i = 0; i < count; i++)
            {
                input.ReadExactly(m);
                got++;
            }
            BinaryPrimitives.WriteInt64LittleEndian(hdr, got);
            output.Write(hdr[..8]);
            output.Flush();
        }
    }

    // ------------------------------------------------------------------
    // Measuring, child process, reporting
    // ------------------------------------------------------------------

    /// <summary>Warm-up transfer, then <see cref="Samples"/> samples sized from its rate; returns messages per second per sample.</summary>
    private static double[] Measure(double seconds, int size, Action<long> transfer)
    {
        long warm = Math.Max(1000, (64L << 20) / size);
        long t0 = Stopwatch.GetTimestamp();
        transfer(warm);
        double warmRate = warm / Stopwatch.GetElapsedTime(t0).TotalSeconds;
        long n = Math.Max(1000, (long)(warmRate * seconds / Samples));
        var rate = new double[Samples];
        for (int s = 0; s < Samples; s++)
        {
            long t1 = Stopwatch.GetTimestamp();
            transfer(n);
            rate[s] = n / Stopwatch.GetElapsedTime(t1).TotalSeconds;
        }
        return rate;
    }

    private static byte[] NewMessage(int size)
    {
        byte[] m = new byte[size];
        for (int i = 0; i < m.Length; i++)
            m[i] = (byte)(i * 31 + 7);
        return m;
    }

    // ------------------------------------------------------------------
    // The limits tool and the summary table
    // ------------------------------------------------------------------

    /// <summary>Runs <c>limits ring pipe socket</c>, echoes its lines and returns the 09_spsc_ring_8KiB median (GB/s).</summary>
    private static double RunLimits(string path, string when)
    {
        var psi = new ProcessStartInfo { FileName = path, UseShellExecute = false, RedirectStandardOutput = true };
        psi.ArgumentList.Add("ring");
        psi.ArgumentList.Add("pipe");
        psi.ArgumentList.Add("socket");
        using Process p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {path}");
        string output = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill();
            throw new TimeoutException($"{path} did not finish within 60 s");
        }
        double ring8K = double.NaN;
        foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            Console.WriteLine($"limits {when}: {line}");
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // name iters median unit min max
            if (f.Length >= 6 && !line.StartsWith('#') && double.TryParse(f[2], CultureInfo.InvariantCulture, out double median))
            {
                s_figures[$"limits {when} {f[0]}"] = [median];
                if (f[0] == "09_spsc_ring_8KiB")
                    ring8K = median;
            }
        }
        return ring8K;
    }

    private static double Median(double[] v)
    {
        double[] r = [.. v];
        Array.Sort(r);
        return r[r.Length / 2];
    }

    private static string Rate(string key, int size)
    {
        if (!s_figures.TryGetValue(key, out double[]? v))
            return "—";
        double[] r = [.. v];
        Array.Sort(r);
        return string.Create(CultureInfo.InvariantCulture, $"{Median(r) / 1e6:F3} [{r[0] / 1e6:F3}..{r[^1] / 1e6:F3}] ({Median(r) * size / 1e9:F2} GB/s)");
    }

    private static string Us(string key)
    {
        if (!s_figures.TryGetValue(key, out double[]? v))
            return "—";
        double[] r = [.. v];
        Array.Sort(r);
        return string.Create(CultureInfo.InvariantCulture, $"{Median(r):F2} [{r[0]:F2}..{r[^1]:F2}] us");
    }

    private static string Ratio(double value, double reference, double target)
        => double.IsNaN(value) || double.IsNaN(reference) || reference <= 0
            ? "—"
            : string.Create(CultureInfo.InvariantCulture, $"{value / reference:F2}x {(value / reference >= target ? "yes" : "**no**")}");

    private static double Med(string key) => s_figures.TryGetValue(key, out double[]? v) ? Median(v) : double.NaN;

    /// <summary>The run's figures as one markdown table (paste into perf/README.md), then the targets' ratios.</summary>
    private static void PrintSummary(string backend, string started, string loadBefore, string loadAfter, double limitsRing8K)
    {
        (int Size, double PgMsgs, double Target)[] pipelined = [(64, 2.633623e6, 2.0), (1024, 1.499723e6, 2.0), (8192, 0.522863e6, 1.3), (65536, double.NaN, double.NaN)];
        Console.WriteLine();
        Console.WriteLine($"Summary: mq --backend {backend}, {started} UTC, {Environment.ProcessorCount} CPUs, load {loadBefore} -> {loadAfter}");
        Console.WriteLine();
        Console.WriteLine("| figure | spin off | spin on | .NET pipe | Unix socket | PostgreSQL |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: |");
        foreach ((int size, double pg, _) in pipelined)
            Console.WriteLine($"| pipelined {SizeName(size)}, M msg/s | {Rate($"shm off {size}", size)} | {Rate($"shm on {size}", size)} | {Rate($"pipe {size}", size)} | {Rate($"socket {size}", size)} | {(double.IsNaN(pg) ? "—" : (pg / 1e6).ToString("F2", CultureInfo.InvariantCulture))} |");
        foreach ((int size, _, _) in pipelined)
            Console.WriteLine($"| pipelined {SizeName(size)}, copied out, M msg/s | {Rate($"copy off {size}", size)} | {Rate($"copy on {size}", size)} | | | |");
        foreach (int size in s_rtSizes)
            Console.WriteLine($"| one in flight {SizeName(size)}, round trip | {Us($"rt off {size}")} | {Us($"rt on {size}")} | | | ≈ {(size == 64 ? 21 : 26)} us |");
        string Idle(string on) => s_figures.TryGetValue($"idle {on}", out double[]? v)
            ? string.Create(CultureInfo.InvariantCulture, $"{v[0]:F2} % CPU, {(Med($"asleep {on}") == 1 ? "asleep" : "**not asleep**")}")
            : "—";
        Console.WriteLine($"| idle receiver over {IdleSeconds:F0} s | {Idle("off")} | {Idle("on")} | | | |");
        foreach (string when in new[] { "before", "after" })
        {
            if (!s_figures.Keys.Any(k => k.StartsWith($"limits {when} ", StringComparison.Ordinal)))
                continue;
            string L(string name, string unit) => s_figures.TryGetValue($"limits {when} {name}", out double[]? v)
                ? string.Create(CultureInfo.InvariantCulture, $"{v[0]:F2} {unit}") : "—";
            Console.WriteLine($"| limits {when} | ring 64 B {L("09_spsc_ring_64B", "GB/s")}, 1 KiB {L("09_spsc_ring_1KiB", "GB/s")}, 8 KiB {L("09_spsc_ring_8KiB", "GB/s")} | pipe rt {L("04_pipe_rt", "us")} | socketpair rt {L("05_unix_socketpair_rt", "us")} | | |");
        }

        Console.WriteLine();
        Console.WriteLine("| target | spin off | spin on |");
        Console.WriteLine("| --- | ---: | ---: |");
        foreach ((int size, double pg, double target) in pipelined)
        {
            if (double.IsNaN(pg))
                continue;
            Console.WriteLine($"| pipelined {SizeName(size)} ≥ {target:F1} x PostgreSQL ({pg / 1e6:F2} M/s) | {Ratio(Med($"shm off {size}"), pg, target)} | {Ratio(Med($"shm on {size}"), pg, target)} |");
        }
        string Rt(string on, double limit) => s_figures.ContainsKey($"rt {on} 64")
            ? string.Create(CultureInfo.InvariantCulture, $"{Med($"rt {on} 64"):F2} us {(Med($"rt {on} 64") < limit ? "yes" : "**no**")}")
            : "—";
        Console.WriteLine($"| one in flight 64 B < 16 us (off) / < 2 us (on) | {Rt("off", 16)} | {Rt("on", 2)} |");
        double ringBps = limitsRing8K * 1e9 / 8192;
        string ringName = double.IsNaN(limitsRing8K) ? "not run: --limits" : limitsRing8K.ToString("F2", CultureInfo.InvariantCulture) + " GB/s";
        Console.WriteLine($"| 8 KiB ≥ 0.7 x limits 09_spsc_ring_8KiB ({ringName}) | {Ratio(Med("shm off 8192"), ringBps, 0.7)} | {Ratio(Med("shm on 8192"), ringBps, 0.7)} |");
        Console.WriteLine($"| same, receiver copies out (like for like) | {Ratio(Med("copy off 8192"), ringBps, 0.7)} | {Ratio(Med("copy on 8192"), ringBps, 0.7)} |");
        Console.WriteLine($"| 8 KiB ≥ 3 x Unix socket (same run) | {Ratio(Med("shm off 8192"), Med("socket 8192"), 3)} | {Ratio(Med("shm on 8192"), Med("socket 8192"), 3)} |");
        Console.WriteLine($"| same, receiver copies out (like for like) | {Ratio(Med("copy off 8192"), Med("socket 8192"), 3)} | {Ratio(Med("copy on 8192"), Med("socket 8192"), 3)} |");
    }

    private static string SizeName(int size) => size >= 1024 ? $"{size / 1024} KiB" : $"{size} B";

    private static void ReportRate(string what, int size, double[] rate)
    {
        double[] r = [.. rate];
        Array.Sort(r);
        double med = r[r.Length / 2];
        Console.WriteLine($"{what,-46} {SizeName(size),6}: {med / 1e6,8:F3} M msg/s [{r[0] / 1e6:F3}..{r[^1] / 1e6:F3}]  {med * size / 1e9,7:F3} GB/s [{r[0] * size / 1e9:F3}..{r[^1] * size / 1e9:F3}]");
    }

    private static void ReportUs(string what, int size, long rounds, double[] us)
    {
        double[] u = [.. us];
        Array.Sort(u);
        Console.WriteLine($"{what,-46} {SizeName(size),6}: {u[u.Length / 2],8:F2} us [{u[0]:F2}..{u[^1]:F2}] per round trip ({rounds} per sample)");
    }

}

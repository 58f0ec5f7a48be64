/*-------------------------------------------------------------------------
 * ShmMqHarness.cs
 *   shm_mq between two processes: the parent and one child it starts (this
 *   same program, verb "mq-child"), each way a 64 KiB ring, reproducing the
 *   two functions of PostgreSQL's test_shm_mq module.
 *
 *     dotnet run -c Release --project perf -- mq [--backend linux|posix] [--seconds 2]
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
 *     roundtrip   (test_shm_mq with one worker) one message in flight: the
 *                 parent sends one (forceFlush true), the child receives it
 *                 and sends it back on c2p, the parent receives it. Time per
 *                 round trip in microseconds.
 *   The parent detaching from p2c ends the child.
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
    private const long CmdPipelined = 1, CmdRoundTrip = 2;
    private const int Samples = 5;
    private static readonly int[] s_sizes = [64, 1024, 8192, 65536];
    private static readonly int[] s_rtSizes = [64, 8192];
    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    /// <summary>Entry point of <c>mq</c>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string backend = "linux";
        double seconds = 2;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length: backend = args[++i]; break;
                case "--seconds" when i + 1 < args.Length: seconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default:
                    Console.Error.WriteLine($"mq: unknown argument \"{args[i]}\"; usage: mq [--backend linux|posix] [--seconds 2]");
                    return 2;
            }
        }
        if (backend is not ("linux" or "posix") || !(seconds > 0))
        {
            Console.Error.WriteLine($"mq: expected --backend linux|posix and --seconds > 0 (got {backend}, {seconds})");
            return 2;
        }
        Console.WriteLine($"mq: 2 processes, ring {RingSize} B each way, {Samples} samples of ~{seconds / Samples:F2} s per figure, {Environment.ProcessorCount} CPUs, load {HarnessChild.LoadAverage()}");
        RunShmMq(backend, seconds);
        RunPipe(seconds);
        RunSocket(seconds);
        Console.WriteLine($"mq: done, load {HarnessChild.LoadAverage()}");
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

    private static void RunShmMq(string backend, double seconds)
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
            string what = $"shm_mq, {backend} ({PgIpcPlatform.Get(backend).Latches.GetType().Name})";

            foreach (int size in s_sizes)
            {
                byte[] msg = NewMessage(size);
                double[] rate = Measure(seconds, size, n => ShmPipelined(tx, rx, msg, n));
                ReportRate($"{what} pipelined", size, rate);
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

    private static void SendCommand(ShmMqHandle tx, long kind, long size, long count)
    {
        Span<byte> cmd = stackalloc byte[24];
        BinaryPrimitives.WriteInt64LittleEndian(cmd, kind);
        BinaryPrimitives.WriteInt64LittleEndian(cmd[8..], size);
        BinaryPrimitives.WriteInt64LittleEndian(cmd[16..], count);
        Check(tx.Send(cmd, nowait: false, forceFlush: true), "send command");
    }

    private static void ShmPipelined(ShmMqHandle tx, ShmMqHandle rx, byte[] msg, long n)
    {
        SendCommand(tx, CmdPipelined, msg.Length, n);
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
            for (;;)
            {
                if (rx.Receive(out ReadOnlySpan<byte> cmd) != ShmMqResult.Success)
                    break; // the parent detached: done
                if (cmd.Length != 24)
                    throw new InvalidOperationException($"mq child: command of {cmd.Length} bytes");
                long kind = BinaryPrimitives.ReadInt64LittleEndian(cmd);
                long count = BinaryPrimitives.ReadInt64LittleEndian(cmd[16..]);
                if (kind == CmdPipelined)
                {
                    long got = 0;
                    for (long i = 0; i < count; i++)
                    {
                        Check(rx.Receive(out _), "child receive");
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
            StreamAll(".NET anonymous pipe pipelined", toChild, fromChild, seconds);
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
            StreamAll(".NET Unix domain socket pipelined", s, s, seconds);
            HarnessChild.WaitExit(child, "mq");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            File.Delete(path);
        }
    }

    private static void StreamAll(string what, Stream output, Stream input, double seconds)
    {
        foreach (int size in s_sizes)
        {
            byte[] msg = NewMessage(size);
            double[] rate = Measure(seconds, size, n => StreamPipelined(output, input, msg, n));
            ReportRate(what, size, rate);
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

/*-------------------------------------------------------------------------
 * PingPongHarness.cs
 *   Cross-process wake-up round trips: the parent and one child it starts
 *   (this same program, verb "pingpong-child") wake each other in turn; the
 *   figure is microseconds per round trip (parent wakes child, child wakes
 *   parent).
 *
 *     dotnet run -c Release --project perf -- pingpong [--backend linux|posix|pipe|socket|all] [--rounds 20000] [--samples 5]
 *
 * NOTES
 *   The macro counterpart of the limits tool's 02..06 round-trip lines
 *   (limits.c, pp_run: futex, eventfd + epoll, pipe, socketpair, signals).
 *   Kinds:
 *     linux, posix  PgIpc latches in a cluster on that backend (ProcArray +
 *                   ProcSignal, PerfLatchCluster). Both processes join
 *                   (ProcArray.Join) and publish their procno in the
 *                   control block. The parent, per round:
 *                       Ping = i (release); SetLatch(child);
 *                       for (;;) { ResetLatch; if (Pong == i) break; WaitLatch(LatchSet) }
 *                   the child answers each new Ping with Pong = Ping and
 *                   SetLatch(parent), in the same Reset / check / Wait loop.
 *                   This is the latch protocol as PostgreSQL code uses it
 *                   (the work is checked after the reset, so an early or
 *                   redundant wake-up is harmless), not a bare kernel
 *                   ping-pong: the counter check is a few loads per round.
 *                   Linux wakes through the owner's eventfd (a duplicate
 *                   taken once with pidfd_getfd, or SIGURG where that is
 *                   refused) and waits in epoll: compare 03_eventfd_epoll_rt.
 *                   Posix writes a byte to the owner's FIFO and waits in
 *                   poll (or select): compare 04_pipe_poll_rt.
 *     pipe          .NET anonymous pipes (AnonymousPipeServerStream, the
 *                   client ends inherited by the child), 1-byte
 *                   write + read each way: compare 04_pipe_rt.
 *     socket        .NET Socket over a Unix domain stream socket
 *                   (UnixDomainSocketEndPoint; .NET has no socketpair, so
 *                   the parent listens on a path under the temp directory
 *                   and the child connects), 1 byte each way: compare
 *                   05_unix_socketpair_rt.
 *
 *   Every kind runs Warmup round trips, then --samples samples of --rounds
 *   round trips; we report the median and the range in microseconds per
 *   round trip, as the C tool does (its samples are 5000 round trips).
 *
 *   Control block (PingPongControl, 128 bytes, two cache lines): the
 *   child release-stores its procno and then Ready; the parent acquire-
 *   reads Ready before it reads ChildProc. Ping is written only by the
 *   parent and Pong only by the child, each with a release store before the
 *   SetLatch that announces it (SetLatch's own fence orders it too) and read
 *   with an acquire load after ResetLatch. Stop ends the child's loop.
 *
 *   The parent kills the child in a finally if it has not exited, destroys
 *   the segment (which removes the Posix FIFO directory /tmp/pgipc.<name>),
 *   disposes the pipes and deletes the socket file, so nothing is left in
 *   /dev/shm, `ipcs -m` or /tmp.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipes;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Perf.Contention;

/// <summary>
/// The ping-pong control block, in shared memory, 128 bytes.
/// <code>
///   0 Ready       child: 1 once joined, after ChildProc (release)
///   8 ChildProc   child: its procno, written before Ready
///  16 ParentProc  parent: its procno, written before the child starts
///  24 Stop        parent: 1 when the child should leave (release, then SetLatch)
///  64 Ping        parent: round number sent (release, then SetLatch(child))
///  72 Pong        child: last round answered (release, then SetLatch(parent))
/// </code>
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct PingPongControl
{
    [FieldOffset(0)] public long Ready;
    [FieldOffset(8)] public long ChildProc;
    [FieldOffset(16)] public long ParentProc;
    [FieldOffset(24)] public long Stop;
    [FieldOffset(64)] public long Ping;
    [FieldOffset(72)] public long Pong;
}

public static unsafe class PingPongHarness
{
    public const string ParentVerb = "pingpong";
    public const string ChildVerb = "pingpong-child";

    private const int Warmup = 5000;
    /// <summary>The byte that tells a pipe or socket child to leave (the round trips send 'x').</summary>
    private const byte StopByte = (byte)'q';

    /// <summary>Entry point of <c>pingpong</c>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string backend = "all";
        int rounds = 20000;
        int samples = 5;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length: backend = args[++i]; break;
                case "--rounds" when i + 1 < args.Length: rounds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--samples" when i + 1 < args.Length: samples = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default:
                    Console.Error.WriteLine($"pingpong: unknown argument \"{args[i]}\"; usage: pingpong [--backend linux|posix|pipe|socket|all] [--rounds 20000] [--samples 5]");
                    return 2;
            }
        }
        if (rounds < 1 || samples < 1)
        {
            Console.Error.WriteLine($"pingpong: --rounds and --samples must be >= 1 (got {rounds}, {samples})");
            return 2;
        }
        if (backend is not ("all" or "linux" or "posix" or "pipe" or "socket"))
        {
            Console.Error.WriteLine($"pingpong: unknown --backend \"{backend}\"; expected linux, posix, pipe, socket or all");
            return 2;
        }
        string[] kinds = backend == "all" ? ["linux", "posix", "pipe", "socket"] : [backend];
        Console.WriteLine($"pingpong: 2 processes, {Warmup} warm-up round trips, {samples} samples of {rounds} round trips, {Environment.ProcessorCount} CPUs, load {HarnessChild.LoadAverage()}");
        foreach (string kind in kinds)
        {
            double[] us = kind switch
            {
                "pipe" => RunPipe(rounds, samples),
                "socket" => RunSocket(rounds, samples),
                _ => RunLatch(kind, rounds, samples),
            };
            Report(kind switch
            {
                "pipe" => ".NET anonymous pipe, 1 byte",
                "socket" => ".NET Unix domain socket, 1 byte",
                _ => $"latch, {kind} ({PgIpcPlatform.Get(kind).Latches.GetType().Name})",
            }, us);
        }
        Console.WriteLine($"pingpong: done, load {HarnessChild.LoadAverage()}");
        return 0;
    }

    /// <summary>Entry point of <c>pingpong-child</c> (started by <see cref="Run"/>): kind, then what it needs to reach the parent.</summary>
    public static int Child(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("pingpong-child: expected latch <handle> | pipe <in-handle> <out-handle> | socket <path>");
            return 2;
        }
        switch (args[0])
        {
            case "latch":
                LatchChild(args[1]);
                return 0;
            case "pipe" when args.Length == 3:
                PipeChild(args[1], args[2]);
                return 0;
            case "socket":
                SocketChild(args[1]);
                return 0;
            default:
                Console.Error.WriteLine($"pingpong-child: bad arguments \"{string.Join(' ', args)}\"");
                return 2;
        }
    }

    // ------------------------------------------------------------------
    // Latches
    // ------------------------------------------------------------------

    private static double[] RunLatch(string backend, int rounds, int samples)
    {
        PerfLatchCluster cluster = PerfLatchCluster.Create("pingpong", backend);
        Process? child = null;
        try
        {
            using Participant me = cluster.Procs.Join();
            var ctl = (PingPongControl*)cluster.Control;
            ProcArray procs = cluster.Procs;
            ctl->ParentProc = me.ProcNumber;
            child = HarnessChild.Start(ChildVerb, ["latch", cluster.Segment.Handle.ToString()]);
            // Acquire read; pairs with the child's release store of Ready after ChildProc.
            HarnessChild.WaitUntil(() => Volatile.Read(ref ctl->Ready) == 1, child, "pingpong", "join");
            int childProc = (int)ctl->ChildProc;

            long round = 0;
            for (int i = 0; i < Warmup; i++)
                LatchRoundTrip(procs, me, childProc, ctl, ++round);
            var us = new double[samples];
            for (int s = 0; s < samples; s++)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < rounds; i++)
                    LatchRoundTrip(procs, me, childProc, ctl, ++round);
                us[s] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds / rounds;
            }

            // Release store, then a wake-up: the child sees Stop after its ResetLatch.
            Volatile.Write(ref ctl->Stop, 1);
            Latches.SetLatch(procs, childProc);
            HarnessChild.WaitExit(child, "pingpong");
            return us;
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            cluster.Close();
        }
    }

    private static void LatchRoundTrip(ProcArray procs, Participant me, int childProc, PingPongControl* ctl, long round)
    {
        // Release store; pairs with the child's acquire read of Ping after its ResetLatch.
        Volatile.Write(ref ctl->Ping, round);
        Latches.SetLatch(procs, childProc);
        for (;;)
        {
            Latches.ResetLatch(me);
            // Acquire read; pairs with the child's release store of Pong before SetLatch(parent).
            if (Volatile.Read(ref ctl->Pong) == round)
                return;
            Latches.WaitLatch(me, WaitEvents.LatchSet, -1);
        }
    }

    private static void LatchChild(string handle)
    {
        PerfLatchCluster cluster = PerfLatchCluster.Attach(handle);
        try
        {
            using Participant me = cluster.Procs.Join();
            ProcArray procs = cluster.Procs;
            var ctl = (PingPongControl*)cluster.Control;
            int parentProc = (int)ctl->ParentProc;
            ctl->ChildProc = me.ProcNumber;
            // Release store: ChildProc first; pairs with the parent's acquire read of Ready.
            Volatile.Write(ref ctl->Ready, 1);
            long answered = 0;
            for (;;)
            {
                Latches.ResetLatch(me);
                if (Volatile.Read(ref ctl->Stop) != 0)
                    break;
                // Acquire read; pairs with the parent's release store of Ping before SetLatch(child).
                long ping = Volatile.Read(ref ctl->Ping);
                if (ping != answered)
                {
                    answered = ping;
                    // Release store; pairs with the parent's acquire read of Pong after its ResetLatch.
                    Volatile.Write(ref ctl->Pong, ping);
                    Latches.SetLatch(procs, parentProc);
                    continue;
                }
                Latches.WaitLatch(me, WaitEvents.LatchSet, -1);
            }
        }
        finally
        {
            cluster.Close();
        }
    }

    // ------------------------------------------------------------------
    // .NET anonymous pipes
    // ------------------------------------------------------------------

    private static double[] RunPipe(int rounds, int samples)
    {
        Process? child = null;
        // Inheritable: the child must receive the client ends. Whether the server ends reach it too is the
        // runtime's business, so the child is told to stop with a byte (StopByte) rather than by end of file.
        using var toChild = new AnonymousPipeServerStream(PipeDirection.Out, HandleInheritability.Inheritable);
        using var fromChild = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.Inheritable);
        try
        {
            child = HarnessChild.Start(ChildVerb, ["pipe", toChild.GetClientHandleAsString(), fromChild.GetClientHandleAsString()]);
            toChild.DisposeLocalCopyOfClientHandle();
            fromChild.DisposeLocalCopyOfClientHandle();
            double[] us = TimeStream(toChild, fromChild, rounds, samples, child);
            toChild.WriteByte(StopByte);
            toChild.Flush();
            HarnessChild.WaitExit(child, "pingpong");
            return us;
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
        }
    }

    private static void PipeChild(string inHandle, string outHandle)
    {
        using var fromParent = new AnonymousPipeClientStream(PipeDirection.In, inHandle);
        using var toParent = new AnonymousPipeClientStream(PipeDirection.Out, outHandle);
        Span<byte> b = stackalloc byte[1];
        while (fromParent.Read(b) == 1 && b[0] != StopByte)
            toParent.Write(b);
    }

    private static double[] TimeStream(Stream output, Stream input, int rounds, int samples, Process child)
    {
        Span<byte> b = stackalloc byte[1];
        for (int i = 0; i < Warmup; i++)
            StreamRoundTrip(output, input, b, child);
        var us = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < rounds; i++)
                StreamRoundTrip(output, input, b, child);
            us[s] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds / rounds;
        }
        return us;
    }

    private static void StreamRoundTrip(Stream output, Stream input, Span<byte> b, Process child)
    {
        b[0] = (byte)'x';
        output.Write(b); // PipeStream is unbuffered: one write(2)
        if (input.Read(b) != 1)
            throw new InvalidOperationException($"pingpong child {child.Id} closed its pipe");
    }

    // ------------------------------------------------------------------
    // .NET Unix domain socket
    // ------------------------------------------------------------------

    private static double[] RunSocket(int rounds, int samples)
    {
        string path = Path.Combine(Path.GetTempPath(), $"pgipc-perf-pingpong-{Environment.ProcessId}.sock");
        Process? child = null;
        try
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);
            child = HarnessChild.Start(ChildVerb, ["socket", path]);
            using Socket conn = listener.Accept();
            Span<byte> b = stackalloc byte[1];
            for (int i = 0; i < Warmup; i++)
                SocketRoundTrip(conn, b, child);
            var us = new double[samples];
            for (int s = 0; s < samples; s++)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < rounds; i++)
                    SocketRoundTrip(conn, b, child);
                us[s] = Stopwatch.GetElapsedTime(t0).TotalMicroseconds / rounds;
            }
            conn.Send([StopByte]);
            HarnessChild.WaitExit(child, "pingpong");
            return us;
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            File.Delete(path);
        }
    }

    private static void SocketRoundTrip(Socket conn, Span<byte> b, Process child)
    {
        b[0] = (byte)'x';
        conn.Send(b);
        if (conn.Receive(b) != 1)
            throw new InvalidOperationException($"pingpong child {child.Id} closed its socket");
    }

    private static void SocketChild(string path)
    {
        using var conn = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        conn.Connect(new UnixDomainSocketEndPoint(path));
        Span<byte> b = stackalloc byte[1];
        while (conn.Receive(b) == 1 && b[0] != StopByte)
            conn.Send(b);
    }

    // ------------------------------------------------------------------
    // Child process and reporting
    // ------------------------------------------------------------------

    private static void Report(string what, double[] us)
    {
        double[] sorted = [.. us];
        Array.Sort(sorted);
        Console.WriteLine($"{what,-52} {sorted[sorted.Length / 2],8:F2} us [{sorted[0]:F2}..{sorted[^1]:F2}] per round trip");
    }

}

/*-------------------------------------------------------------------------
 * RingHarness.cs
 *   PgIpc's shm_mq driven in PostgreSQL test_shm_mq's ring shape, exactly
 *   as the pg-shm-mq tool drives PostgreSQL's: the leader (this process)
 *   sends into queue 0, worker i (a child process, verb "ring-child")
 *   receives from queue i-1 and sends every message on into queue i with a
 *   blocking, force-flushed send, and the leader receives from queue W.
 *
 * NOTES
 *   Queues of ShmMq.SizeFor(65536) bytes (a 65,536-byte ring after the
 *   header; PostgreSQL's 65,536 includes its header), in one segment with
 *   the ProcArray and ProcSignal. The leader's two functions are those of
 *   pgmqbench.c:
 *     pipelined   send with nowait and force flush, receive with nowait,
 *                 and when neither made progress wait on the leader's latch
 *                 (with spin on, first poll again for up to 32 us, the
 *                 largest budget the library's own blocking waits spin,
 *                 pausing for 2 us then yielding between polls as they do:
 *                 the leader's nowait calls do not spin by themselves);
 *                 msg/s over the message loop only.
 *     round trip  one message in flight: a blocking send, then a blocking
 *                 receive; microseconds per round trip.
 *   Spin off / on sets SpinBeforeSleep on every handle of the ring (the
 *   workers get it on their command line: one ring of processes per
 *   setting). The leader detaching from queue 0 ends worker 1, whose
 *   detach ends worker 2, and so on; the leader waits for them, kills any
 *   that remain in a finally and destroys the segment.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Platform;
using PgIpc.Mq;
using PgIpc.Perf.Contention;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;

namespace PgIpc.Perf.Report;

internal static class RingHarness
{
    public const string ChildVerb = "ring-child";
    private const long RingSize = 65536;
    public static readonly int[] PipelinedSizes = [64, 1024, 8192];
    public static readonly int[] RoundTripSizes = [64, 8192];
    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    private static string QueueName(int i) => $"perf.ring.q{i}";

    /// <summary>One ring of <paramref name="workers"/> worker processes on <paramref name="backend"/>; records ring.&lt;backend&gt;.w&lt;W&gt;.* figures.</summary>
    public static void Run(string backend, int workers, bool spin, double secondsPerFigure, ReportData data, int round)
    {
        long qsize = ShmMq.SizeFor(RingSize);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(s_options.TotalProcs));
        for (int i = 0; i <= workers; i++)
            sizes.RequestAddinShmemSpace(QueueName(i), qsize);
        ShmemSegment? segment = PerfSegments.Create($"ring{workers}", backend, sizes);
        var children = new List<Process>();
        string on = spin ? "on" : "off";
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            ProcSignal.Init(segment, procs, out _);
            var queues = new ShmMq[workers + 1];
            for (int i = 0; i <= workers; i++)
                queues[i] = ShmMq.Create(segment.InitStruct(QueueName(i), qsize, out _));
            using Participant me = procs.Join();
            queues[0].SetSender(me);
            queues[workers].SetReceiver(me);
            for (int i = 1; i <= workers; i++)
                children.Add(HarnessChild.Start(ChildVerb, segment.Handle.ToString(), i.ToString(CultureInfo.InvariantCulture),
                    Environment.ProcessId.ToString(CultureInfo.InvariantCulture), on));
            using ShmMqHandle tx = queues[0].Attach(me, new ShmMqProcessPeer(segment.Platform.Processes, children[0].Id));
            using ShmMqHandle rx = queues[workers].Attach(me, new ShmMqProcessPeer(segment.Platform.Processes, children[^1].Id));
            tx.SpinBeforeSleep = rx.SpinBeforeSleep = spin;
            string prefix = $"ring.{backend}.w{workers}";
            foreach (int size in PipelinedSizes)
            {
                byte[] msg = new byte[size];
                msg.AsSpan().Fill((byte)'x');
                long warm = Math.Max(2000, (4L << 20) / size);
                long t0 = Stopwatch.GetTimestamp();
                Pipelined(me, tx, rx, msg, warm, spin);
                double rate = warm / Stopwatch.GetElapsedTime(t0).TotalSeconds;
                long n = Math.Max(2000, (long)(rate * secondsPerFigure));
                long t1 = Stopwatch.GetTimestamp();
                Pipelined(me, tx, rx, msg, n, spin);
                data.Add($"{prefix}.pipelined.{size}.{on}", round, n / Stopwatch.GetElapsedTime(t1).TotalSeconds, "msg/s", true);
            }
            foreach (int size in RoundTripSizes)
            {
                byte[] msg = new byte[size];
                msg.AsSpan().Fill((byte)'x');
                long t0 = Stopwatch.GetTimestamp();
                RoundTrips(tx, rx, msg, 200);
                double per = Math.Max(Stopwatch.GetElapsedTime(t0).TotalSeconds, 1e-5) / 200;
                long n = Math.Clamp((long)(secondsPerFigure / per), 200, 2_000_000);
                long t1 = Stopwatch.GetTimestamp();
                RoundTrips(tx, rx, msg, n);
                data.Add($"{prefix}.rt.{size}.{on}", round, Stopwatch.GetElapsedTime(t1).TotalMicroseconds / n, "us", false);
            }
            tx.Detach();
            rx.Detach();
            foreach (Process c in children)
                HarnessChild.WaitExit(c, "ring");
        }
        finally
        {
            foreach (Process c in children)
                HarnessChild.KillIfRunning(c);
            PerfSegments.Destroy(ref segment);
        }
    }

    private static void Check(ShmMqResult r, string what)
    {
        if (r == ShmMqResult.Detached)
            throw new InvalidOperationException($"ring: {what}: the peer detached");
    }

    /// <summary>pgmqbench's mq_pipelined: nowait send and receive, the leader's latch when neither moved.</summary>
    private static void Pipelined(Participant me, ShmMqHandle tx, ShmMqHandle rx, byte[] msg, long n, bool spin)
    {
        long sent = 0, received = 0;
        long spinLimit = Stopwatch.Frequency * 32 / 1_000_000;
        long idleSince = 0;
        while (received < n)
        {
            bool progress = false;
            if (sent < n)
            {
                ShmMqResult r = tx.Send(msg, nowait: true, forceFlush: true);
                Check(r, "send");
                if (r == ShmMqResult.Success)
                {
                    sent++;
                    progress = true;
                }
            }
            ShmMqResult rr = rx.Receive(out ReadOnlySpan<byte> m, nowait: true);
            Check(rr, "receive");
            if (rr == ShmMqResult.Success)
            {
                if (m.Length != msg.Length)
                    throw new InvalidOperationException($"ring: received {m.Length} bytes, sent {msg.Length}");
                received++;
                progress = true;
            }
            if (progress)
            {
                idleSince = 0;
                continue;
            }
            if (spin)
            {
                long now = Stopwatch.GetTimestamp();
                if (idleSince == 0)
                    idleSince = now;
                if (now - idleSince < spinLimit)
                {
                    // As the library's own spin: a CPU pause for the first 2 us, then offer the CPU between polls
                    // (on a busy machine a worker may be waiting for this very CPU).
                    if (now - idleSince < spinLimit / 16)
                        Thread.SpinWait(8);
                    else
                        Thread.Yield();
                    continue;
                }
            }
            idleSince = 0;
            me.WaitLatch(WaitEvents.LatchSet, -1, ShmMqHandle.ReceiveWaitEvent);
            me.ResetLatch();
        }
    }

    /// <summary>pgmqbench's mq_roundtrip: one message in flight, blocking send then blocking receive.</summary>
    private static void RoundTrips(ShmMqHandle tx, ShmMqHandle rx, byte[] msg, long n)
    {
        for (long i = 0; i < n; i++)
        {
            if (tx.Send(msg, nowait: false, forceFlush: true) != ShmMqResult.Success)
                throw new InvalidOperationException("ring: send failed");
            if (rx.Receive(out ReadOnlySpan<byte> back) != ShmMqResult.Success || back.Length != msg.Length)
                throw new InvalidOperationException("ring: receive failed");
        }
    }

    /// <summary>Entry point of <c>ring-child handle index leaderPid on|off</c>: worker <c>index</c> of the ring.</summary>
    public static int Child(string[] args)
    {
        if (args.Length != 4)
        {
            Console.Error.WriteLine($"{ChildVerb}: bad arguments \"{string.Join(' ', args)}\"");
            return 2;
        }
        int index = int.Parse(args[1], CultureInfo.InvariantCulture);
        int leader = int.Parse(args[2], CultureInfo.InvariantCulture);
        bool spin = args[3] == "on";
        ShmemSegment segment = ShmemSegment.Attach(args[0]);
        try
        {
            ProcArray procs = ProcArray.Attach(segment);
            if (!segment.TryFindStruct(QueueName(index - 1), out ShmemRegion rin) || !segment.TryFindStruct(QueueName(index), out ShmemRegion rout))
                throw new InvalidOperationException($"segment {args[0]} has no ring queues {index - 1} / {index}");
            ShmMq inq = ShmMq.Open(rin), outq = ShmMq.Open(rout);
            using Participant me = procs.Join();
            inq.SetReceiver(me);
            outq.SetSender(me);
            var peer = new ShmMqProcessPeer(segment.Platform.Processes, leader);
            using ShmMqHandle rx = inq.Attach(me, peer);
            using ShmMqHandle tx = outq.Attach(me, peer);
            rx.SpinBeforeSleep = tx.SpinBeforeSleep = spin;
            for (;;)
            {
                if (rx.Receive(out ReadOnlySpan<byte> m) != ShmMqResult.Success)
                    break;
                if (tx.Send(m, nowait: false, forceFlush: true) != ShmMqResult.Success)
                    break;
            }
        }
        finally
        {
            segment.Dispose();
        }
        return 0;
    }
}

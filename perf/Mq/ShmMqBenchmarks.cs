/*-------------------------------------------------------------------------
 * ShmMqBenchmarks.cs
 *   Micro-benchmarks of shm_mq: send + receive of 64 B, 1 KiB and 8 KiB
 *   messages through a 64 KiB ring, one thread playing both sides.
 *
 * NOTES
 *   One participant is both the sender and the receiver (a loopback queue:
 *   AttachAsSender + AttachAsReceiver). Each invoke sends a batch that fits
 *   the ring (512 x 64 B, 32 x 1 KiB, 4 x 8 KiB: about half of it), then
 *   receives the batch, then one nowait Receive that finds the queue empty
 *   and gives the consumed space back; MessagesPerInvoke messages in all, so
 *   the figure is per message (MB/s = message size / time). The ring
 *   position moves by a size that does not divide the ring, so some
 *   messages wrap and are copied out; the rest are read in place (zero copy).
 *
 *   Batched: sends with forceFlush false publish BytesWritten once a quarter
 *   of the ring is pending (and Flush at the end of the batch), the receiver
 *   publishes BytesRead on the same rule: the steady state is a copy in, a
 *   look at the length word, and a counter store now and then.
 *   FlushEach: forceFlush on every send (a release store and a SetLatch per
 *   message; the latch is our own and already set, so no system call).
 *   CopyBaseline: the same bytes copied twice (in and out) with Span.CopyTo,
 *   the floor any queue that copies in and out pays.
 *
 *   Compare with the limits tool's SPSC ring lines (/work/shared/tools/limits,
 *   "./limits ring") in the same time window.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Mq;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;

namespace PgIpc.Perf.Mq;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class ShmMqBenchmarks
{
    private const int MessagesPerInvoke = 1024;
    private const long RingSize = 64 * 1024;
    private const string RegionName = "perf.mq";

    private ShmemSegment? _segment;
    private Participant? _me;
    private ShmMqHandle? _tx;
    private ShmMqHandle? _rx;
    private byte[] _message = [];
    private byte[] _sink = [];
    private int _batch;

    [Params(64, 1024, 8192)]
    public int MessageSize { get; set; } = 64;

    /// <summary>The backend of the segment (not a BenchmarkDotNet parameter: `report` sets it per backend).</summary>
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        var options = new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(options.TotalProcs))
            .RequestAddinShmemSpace(RegionName, ShmMq.SizeFor(RingSize));
        _segment = PerfSegments.Create("mq", Backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(_segment, options, out _);
            ProcSignal.Init(_segment, procs, out _);
            ShmMq mq = ShmMq.Create(_segment.InitStruct(RegionName, ShmMq.SizeFor(RingSize), out _));
            _me = procs.Join();
            mq.SetSender(_me);
            mq.SetReceiver(_me);
            _tx = mq.AttachAsSender(_me);
            _rx = mq.AttachAsReceiver(_me);
        }
        catch
        {
            PerfSegments.Destroy(ref _segment);
            throw;
        }
        _message = new byte[MessageSize];
        new Random(1).NextBytes(_message);
        _sink = new byte[MessageSize];
        _batch = MessageSize switch { 64 => 512, 1024 => 32, _ => 4 };
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tx = _rx = null;
        _me?.Dispose();
        _me = null;
        PerfSegments.Destroy(ref _segment);
    }

    /// <summary>Batched send (flush at the end of the batch), then receive; figure per message.</summary>
    [Benchmark(OperationsPerInvoke = MessagesPerInvoke)]
    public long Batched() => Run(forceFlush: false);

    /// <summary>Every send publishes and sets the receiver's latch; figure per message.</summary>
    [Benchmark(OperationsPerInvoke = MessagesPerInvoke)]
    public long FlushEach() => Run(forceFlush: true);

    /// <summary>The same bytes copied in and out with Span.CopyTo, no queue; figure per message.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = MessagesPerInvoke)]
    public long CopyBaseline()
    {
        byte[] ring = s_ring;
        long sum = 0;
        int pos = 0;
        for (int i = 0; i < MessagesPerInvoke; i++)
        {
            int at = pos;
            _message.AsSpan().CopyTo(ring.AsSpan(at));
            ring.AsSpan(at, MessageSize).CopyTo(_sink);
            sum += _sink[0];
            pos = (pos + MessageSize + 8) % (ring.Length - MessageSize);
        }
        return sum;
    }

    private static readonly byte[] s_ring = new byte[RingSize];

    private long Run(bool forceFlush)
    {
        ShmMqHandle tx = _tx!, rx = _rx!;
        ReadOnlySpan<byte> message = _message;
        int batch = _batch;
        long sum = 0;
        for (int done = 0; done < MessagesPerInvoke; done += batch)
        {
            for (int i = 0; i < batch; i++)
                tx.Send(message, nowait: true, forceFlush: forceFlush);
            tx.Flush();
            for (int i = 0; i < batch; i++)
            {
                rx.Receive(out ReadOnlySpan<byte> m, nowait: true);
                sum += m.Length;
            }
            rx.Receive(out _, nowait: true); // empty: gives the consumed space back
        }
        return sum;
    }
}

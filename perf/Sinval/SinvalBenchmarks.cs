/*-------------------------------------------------------------------------
 * SinvalBenchmarks.cs
 *   Micro-benchmarks of the shared invalidation queue: one writer and one
 *   reader participant, send + receive, figure per message.
 *
 * NOTES
 *   Each round the writer sends BatchSize (64 = one WRITE_QUANTUM chunk:
 *   one hold of SInvalWriteLock, the msgnumLock, one hasMessages store per
 *   reader) and the reader takes them back, either with GetMessages into a
 *   64-message buffer (one hold of SInvalReadLock shared) or with ReceiveAll
 *   (two batches of 32, a delegate call per message, and the fast-path
 *   check that ends the loop). Rounds rounds per invocation
 *   (OperationsPerInvoke = messages), so the figure is per message and
 *   includes the cleanup that runs every 2048 messages even when everyone
 *   keeps up (minMsgNum only moves in the cleanup), as in PostgreSQL.
 *
 *   Both participants are driven from the benchmark thread: the reader is
 *   joined on a helper thread in GlobalSetup (a thread can be only one
 *   participant) and then used with explicit-participant calls, which
 *   LWLock allows as long as no two threads use it at once. Delegates are
 *   cached in fields, so nothing is allocated per call (MemoryDiagnoser).
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Perf.Sinval;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class SinvalBenchmarks
{
    private const int BatchSize = 64;
    private const int Rounds = 16;
    private const int MessagesPerInvoke = BatchSize * Rounds;

    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    private ShmemSegment? _segment;
    private SinvalQueue? _queue;
    private Participant? _writer;
    private Participant? _reader;
    private readonly SharedInvalidationMessage[] _outgoing = new SharedInvalidationMessage[BatchSize];
    private readonly SharedInvalidationMessage[] _incoming = new SharedInvalidationMessage[BatchSize];
    private SinvalConsumer? _onMessage;
    private Action? _onReset;
    private long _sum;
    private long _resets;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(SinvalQueue.ShmemName, SinvalQueue.ShmemSize(s_options.TotalProcs));
        _segment = PerfSegments.Create("sinval", Backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(_segment, s_options, out _);
            _queue = SinvalQueue.Init(_segment, procs, out _);
            _writer = procs.Join();
            Participant? reader = null;
            var t = new Thread(() => reader = procs.Join()) { Name = "sinval bench reader join" };
            t.Start();
            t.Join();
            _reader = reader ?? throw new InvalidOperationException("the reader did not join");
            _queue.RegisterBackend(_reader);
            for (int i = 0; i < BatchSize; i++)
                _outgoing[i] = new SharedInvalidationMessage(i % 5, 1, (uint)i, (uint)i * 31);
            _onMessage = OnMessage;
            _onReset = OnReset;
        }
        catch
        {
            Cleanup();
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_resets != 0)
            Console.WriteLine($"// warning: the reader was reset {_resets} times");
        _reader?.Dispose();
        _writer?.Dispose();
        _reader = _writer = null;
        _queue = null;
        PerfSegments.Destroy(ref _segment);
    }

    private void OnMessage(in SharedInvalidationMessage m) => _sum += m.ObjectId;

    private void OnReset() => _resets++;

    /// <summary>SendMessages(64) + GetMessages(buffer of 64), Rounds times; figure per message.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = MessagesPerInvoke)]
    public long SendAndGetMessages()
    {
        SinvalQueue q = _queue!;
        Participant w = _writer!, r = _reader!;
        long sum = 0;
        for (int i = 0; i < Rounds; i++)
        {
            q.SendMessages(w, _outgoing);
            int n = q.GetMessages(r, _incoming);
            sum += n;
        }
        if (sum != MessagesPerInvoke)
            ThrowLost(sum);
        return sum;
    }

    /// <summary>SendMessages(64) + ReceiveAll (batches of 32, a delegate call per message), Rounds times; figure per message.</summary>
    [Benchmark(OperationsPerInvoke = MessagesPerInvoke)]
    public long SendAndReceiveAll()
    {
        SinvalQueue q = _queue!;
        Participant w = _writer!, r = _reader!;
        SinvalConsumer onMessage = _onMessage!;
        Action onReset = _onReset!;
        for (int i = 0; i < Rounds; i++)
        {
            q.SendMessages(w, _outgoing);
            q.ReceiveAll(r, onMessage, onReset);
        }
        return _sum;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ThrowLost(long got) => throw new InvalidOperationException($"received {got} of {MessagesPerInvoke} messages");
}

/*-------------------------------------------------------------------------
 * ParallelWorkerMain.cs
 *   The test executable as a parallel worker ("worker --backend b
 *   --run-child parallel-<mode> 0 --pgipc-parallel=<handle>:<n>", started
 *   by ParallelContext.LaunchParallelWorkers).
 *
 * NOTES
 *   Modes (each runs inside ParallelWorker.Run, so a throw reaches the
 *   leader as a ParallelWorkerException and the process exits 0):
 *     parallel-sum     sums its share of the longs under KeyData and sends
 *                      the partial sum (8 bytes) on its tuple queue
 *     parallel-error   worker 0 throws ErrorMessage(0); the others finish
 *     parallel-ring    forwards every message from ring queue KeyRing + n
 *                      to ring queue KeyRing + n + 1 until its input ends
 *     parallel-stream  sends 1 KiB messages on its tuple queue, one per
 *                      millisecond, until the leader detaches (60 s at most)
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Mq;
using PgIpc.Parallel;

namespace PgIpc.Tests.Parallel;

internal static class ParallelWorkerMain
{
    public const string ModePrefix = "parallel-";
    public const ulong KeyData = 1;
    public const ulong KeyRing = 100;

    public static string ErrorMessage(int worker) => $"worker {worker} failed on purpose: division by zero in its half";

    /// <summary>Runs the worker when <paramref name="args"/> name a parallel mode; returns its exit code, or -1.</summary>
    public static int TryRun(string[] args)
    {
        int i = Array.IndexOf(args, Postmaster.PostmasterWorkerCommands.RunChildOption);
        if (i < 0 || i + 1 >= args.Length || !args[i + 1].StartsWith(ModePrefix, StringComparison.Ordinal))
            return -1;
        string mode = args[i + 1];
        if (mode == "parallel-noattach")
            return 1; // fails before it attaches: an error exit (not a crash), and the leader must not wait for it
        return ParallelWorker.Run(args, w =>
        {
            switch (mode)
            {
                case "parallel-sum": Sum(w); break;
                case "parallel-error": Error(w); break;
                case "parallel-ring": Ring(w); break;
                case "parallel-stream": Stream(w); break;
                case var m when m.StartsWith(Storage.SharedFileSetWorkerMain.ModePrefix, StringComparison.Ordinal): Storage.SharedFileSetWorkerMain.Run(m, w); break;
                default: throw new InvalidOperationException($"unknown parallel worker mode {mode}");
            }
        });
    }

    private static void Sum(ParallelWorker w)
    {
        long offset = w.Toc.Lookup(KeyData);
        long n = MemoryMarshal.Read<long>(w.Toc.ChunkAt(offset, 8).AsSpan());
        ReadOnlySpan<long> data = MemoryMarshal.Cast<byte, long>(w.Toc.ChunkAt(offset + 8, n * 8).AsSpan());
        long from = n * w.WorkerNumber / w.NumWorkers, to = n * (w.WorkerNumber + 1) / w.NumWorkers;
        long sum = 0;
        for (long k = from; k < to; k++)
            sum += data[(int)k];
        Span<byte> msg = stackalloc byte[8];
        MemoryMarshal.Write(msg, in sum);
        if (w.TupleQueue.Send(msg) != ShmMqResult.Success)
            throw new InvalidOperationException("the leader detached before the partial sum was sent");
    }

    private static void Error(ParallelWorker w)
    {
        if (w.WorkerNumber == 0)
            throw new InvalidOperationException(ErrorMessage(0));
    }

    private static void Ring(ParallelWorker w)
    {
        long size = RingQueueBytes;
        ShmMq input = ShmMq.Open(w.Toc.LookupChunk(KeyRing + (ulong)w.WorkerNumber, size));
        ShmMq output = ShmMq.Open(w.Toc.LookupChunk(KeyRing + (ulong)w.WorkerNumber + 1, size));
        input.SetReceiver(w.Participant);
        output.SetSender(w.Participant);
        using ShmMqHandle rx = input.AttachAsReceiver(w.Participant);
        using ShmMqHandle tx = output.AttachAsSender(w.Participant);
        while (rx.Receive(out ReadOnlySpan<byte> msg) == ShmMqResult.Success)
            if (tx.Send(msg) != ShmMqResult.Success)
                throw new InvalidOperationException($"ring worker {w.WorkerNumber}: the next process detached");
    }

    /// <summary>Bytes of each ring queue (header and a 64 KiB ring).</summary>
    public static long RingQueueBytes => ShmMq.SizeFor(RingSize);

    public const long RingSize = 64 * 1024;

    private static void Stream(ParallelWorker w)
    {
        byte[] msg = new byte[1024];
        long deadline = Environment.TickCount64 + 60_000;
        for (int k = 0; Environment.TickCount64 < deadline; k++)
        {
            msg[0] = (byte)k;
            if (w.TupleQueue.Send(msg) != ShmMqResult.Success)
                return;
            Thread.Sleep(1);
        }
    }
}

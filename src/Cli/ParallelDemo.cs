/*-------------------------------------------------------------------------
 * ParallelDemo.cs
 *   pgipc demo --parallel: a parallel sum over generated data. The leader
 *   (this process, also the supervisor) puts the rows in a dynamic segment,
 *   launches N background workers through a ParallelContext; each sums its
 *   share in blocks and returns one row (block, sum) per block through its
 *   tuple queue; the leader adds the rows up and checks the total.
 *
 * NOTES
 *   The workers are this executable run as "pgipc parallel-demo-child"; the
 *   ParallelContext appends the segment's handle and the worker number.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using PgIpc.Mq;
using PgIpc.Parallel;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;

namespace PgIpc.Cli;

internal static class ParallelDemo
{
    public const string ChildVerb = "parallel-demo-child";
    private const ulong KeyRows = 1;
    private const int BlockRows = 10_000;

    public static int Run(ParallelDemoOptions options)
    {
        (IPgIpcPlatform platform, int workers, long rows) = options;
        if (workers < 1 || workers > 8)
            throw new ArgumentException("--workers must be 1..8");
        if (rows < 1 || rows > 64L * 1024 * 1024)
            throw new ArgumentException("--rows must be 1..67108864");

        Console.WriteLine($"backend      {platform.Name}");
        using Supervisor supervisor = new ClusterBuilder($"pgipc-pdemo-{Environment.ProcessId}")
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: workers))
            .WithMaxChildren(workers)
            .Build();
        supervisor.Start();
        Cluster cluster = supervisor.Cluster;
        using Participant leader = cluster.Procs.Join(ProcKind.Backend);
        var sw = Stopwatch.StartNew();
        long total = 0, expected = 0, received = 0;
        int launched = 0;
        using (ParallelContext ctx = ParallelContext.Create(cluster, WorkerSpec(), workers))
        {
            ctx.Estimator.EstimateChunk(8 + rows * 8);
            ctx.Estimator.EstimateKeys(1);
            ctx.InitializeDsm();
            ShmTocChunk chunk = ctx.Toc.Allocate(8 + rows * 8);
            Span<long> words = MemoryMarshal.Cast<byte, long>(chunk.AsSpan());
            words[0] = rows;
            for (long i = 0; i < rows; i++)
            {
                words[(int)(1 + i)] = i % 1000 + 1;
                expected += i % 1000 + 1;
            }
            ctx.Toc.Insert(KeyRows, chunk);
            Console.WriteLine(ctx.IsInPrivateMemory
                ? $"segment      none: the context runs in private memory, {rows} rows"
                : $"segment      dynamic segment {ctx.Segment.Handle}, {ctx.Segment.Size} bytes, {rows} rows");
            launched = ctx.LaunchParallelWorkers();
            if (launched == 0)
            {
                // No worker slot was free (or none asked for): the leader does the work itself, as parallel.c's
                // leader does when nworkers_launched is 0.
                for (long i = 0; i < rows; i++)
                    total += words[(int)(1 + i)];
                received = rows;
            }
            for (int w = 0; w < launched; w++)
            {
                while (ctx.ReceiveTuple(w, out ReadOnlySpan<byte> row))
                {
                    total += MemoryMarshal.Read<long>(row[8..]);
                    received++;
                }
            }
            ctx.WaitForParallelWorkersToFinish(TimeSpan.FromSeconds(60));
        }
        sw.Stop();
        bool ok = total == expected && cluster.Dsm.LiveSegments() == 0;
        Console.WriteLine(launched == 0
            ? $"workers      none of {workers} launched: the leader summed {received} rows itself"
            : $"workers      {launched} of {workers} launched, {received} rows (block, sum) returned through the tuple queues");
        Console.WriteLine($"sum          {total}, expected {expected}: {(ok ? "OK" : "WRONG")} in {sw.Elapsed.TotalMilliseconds:F0} ms");
        return ok ? 0 : 1;
    }

    private static ChildSpec WorkerSpec() => ChildSpec.ForThisProgram("parallel demo worker", ChildVerb, []);

    /// <summary>Worker side: sums its share in blocks, one (block, sum) row per block.</summary>
    public static int RunChild(string[] args) => ParallelWorker.Run(args, w =>
    {
        long offset = w.Toc.Lookup(KeyRows);
        long n = MemoryMarshal.Read<long>(w.Toc.ChunkAt(offset, 8).AsSpan());
        ReadOnlySpan<long> data = MemoryMarshal.Cast<byte, long>(w.Toc.ChunkAt(offset + 8, n * 8).AsSpan());
        long from = n * w.WorkerNumber / w.NumWorkers, to = n * (w.WorkerNumber + 1) / w.NumWorkers;
        Span<byte> row = stackalloc byte[16];
        for (long b = from; b < to; b += BlockRows)
        {
            long end = Math.Min(to, b + BlockRows), sum = 0;
            for (long k = b; k < end; k++)
                sum += data[(int)k];
            MemoryMarshal.Write(row, in b);
            MemoryMarshal.Write(row[8..], in sum);
            if (w.TupleQueue.Send(row, forceFlush: false) != ShmMqResult.Success)
                throw new PgIpcException("the leader detached");
        }
    });
}

/*-------------------------------------------------------------------------
 * OpCountHarness.cs
 *   perf -- opcount <op> <invocations>: sets up one micro benchmark class,
 *   runs its hot method the given number of times (1024 operations each)
 *   and exits, so that valgrind's callgrind can count the instructions of
 *   the hot path whatever else the machine is doing.
 *
 * NOTES
 *   Wall-clock figures on this VM move 2-5x with other work; instruction
 *   counts do not (callgrind counts what the CPU would execute). Run each
 *   op twice, with N and 0 invocations, under the same build and the same
 *   settings (tiered compilation off, so the code is fully optimised from
 *   the first call and the JIT's work is the same in both runs):
 *
 *     DOTNET_TieredCompilation=0 valgrind --tool=callgrind \
 *       --callgrind-out-file=/dev/null dotnet PgIpc.Perf.dll opcount lwlock 2000
 *
 *   (I(N) - I(0)) / (N * 1024) is the hot path's instructions per
 *   operation. Comparing two builds this way tells whether a change costs
 *   instructions on the hot path; it says nothing of cache misses or
 *   contention, which only the timed benchmarks show.
 *
 *   Ops: lwlock (LWLockBenchmarks.ExclusivePairLoop, linux backend),
 *   bufferhit (BufferPoolBenchmarks.ReadBufferHitRelease), mq
 *   (ShmMqBenchmarks.FlushEach, 64 B), walinsert (WalBenchmarks.Insert100:
 *   a 100-byte record without a flush; the write-out of full buffers and
 *   the benchmark's periodic checkpoint are in the count, amortised).
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Perf.Buffers;
using PgIpc.Perf.Mq;
using PgIpc.Perf.Sync;
using PgIpc.Perf.Wal;

namespace PgIpc.Perf.OpCount;

internal static class OpCountHarness
{
    public const string Verb = "opcount";

    public static int Run(string[] args)
    {
        if (args.Length != 2 || !int.TryParse(args[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n))
        {
            Console.Error.WriteLine("usage: perf opcount lwlock|bufferhit|mq|walinsert <invocations>");
            return 2;
        }
        long sink = 0;
        switch (args[0])
        {
            case "lwlock":
            {
                var b = new LWLockBenchmarks { Backend = "linux" };
                b.Setup();
                b.ExclusivePairLoop(); // compiled and its first-call work done in both runs
                for (int i = 0; i < n; i++)
                    b.ExclusivePairLoop();
                b.Cleanup();
                break;
            }
            case "bufferhit":
            {
                var b = new BufferPoolBenchmarks { Backend = "linux" };
                b.Setup();
                b.ReadBufferHitRelease();
                for (int i = 0; i < n; i++)
                    b.ReadBufferHitRelease();
                b.Cleanup();
                break;
            }
            case "mq":
            {
                var b = new ShmMqBenchmarks { Backend = "linux", MessageSize = 64 };
                b.Setup();
                sink += b.FlushEach();
                for (int i = 0; i < n; i++)
                    sink += b.FlushEach();
                b.Cleanup();
                break;
            }
            case "walinsert":
            {
                var b = new WalBenchmarks { Backend = "linux", SteadyState = false };
                b.Setup();
                sink += (long)b.Insert100();
                for (int i = 0; i < n; i++)
                    sink += (long)b.Insert100();
                b.Cleanup();
                break;
            }
            default:
                Console.Error.WriteLine($"unknown op {args[0]}: lwlock, bufferhit, mq or walinsert");
                return 2;
        }
        Console.WriteLine($"{args[0]} x {n} invocations done ({sink & 1})");
        return 0;
    }
}

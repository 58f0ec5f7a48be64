/*-------------------------------------------------------------------------
 * Program.cs
 *   Entry point of the PgIpc micro-benchmarks.
 *
 * NOTES
 *   dotnet run -c Release --project perf -- --filter '*'
 *   dotnet run -c Release --project perf -- contend [--backend linux|posix|mutex|all] [--seconds 3]
 *   dotnet run -c Release --project perf -- pingpong [--backend linux|posix|pipe|socket|all] [--rounds 20000] [--samples 5]
 *   dotnet run -c Release --project perf -- mq [--backend linux|posix] [--seconds 2]
 *   dotnet run -c Release --project perf -- buffers [--backend linux|posix] [--workload hit|mix|all]
 *   dotnet run -c Release --project perf -- wal [--backend linux|posix] [--seconds 1] [--samples 3]
 *   dotnet run -c Release --project perf -- bindings [--blocks 200] [--calls 2000]
 *   dotnet run -c Release --project perf -- report [--quick] [--backend linux|posix|windows]...
 *
 *   BenchmarkSwitcher picks the classes the filter names. Unless the
 *   command line says otherwise (--artifacts), results go to
 *   perf/BenchmarkDotNet.Artifacts rather than the working directory, so a
 *   run from the repository root leaves nothing outside perf/.
 *
 *   "contend" is not a BenchmarkDotNet run: it is the two-process
 *   contention harness (Contention/ContendHarness.cs), which starts this
 *   program again as its child with the verb "contend-child". "pingpong"
 *   (Contention/PingPongHarness.cs, child verb "pingpong-child") is the
 *   cross-process wake-up round-trip harness, the same way; so is "mq"
 *   (Contention/ShmMqHarness.cs, child verb "mq-child"), shm_mq between
 *   two processes with pipe and socket peers; so is "buffers"
 *   (Buffers/BufferHarness.cs, child verb "buffers-child"), the buffer
 *   pool's hit path and a mixed workload with one and two processes; so is
 *   "wal" (Wal/WalHarness.cs, child verb "wal-child"), WAL inserts in one
 *   and two processes and eight committers in four processes.
 *   "bindings" (Platform/BindingAbHarness.cs) times our former libc
 *   bindings against Tmds.LibC's, call by call, in one process.
 *   "report" (Report/ReportCommand.cs) runs all of them with their peers
 *   (the limits tool, PostgreSQL's shm_mq) in interleaved rounds and writes
 *   perf/results/<date>-<os>-<cpu>.md and .json; its children use the
 *   verbs "ring-child" and "scale-child".
 *-------------------------------------------------------------------------
 */
using System.Reflection;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using PgIpc.Perf.Contention;

namespace PgIpc.Perf;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == Platform.BindingAbHarness.Verb)
            return Platform.BindingAbHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == Report.ReportCommand.Verb)
            return Report.ReportCommand.Run(args[1..]);
        if (args.Length > 0 && args[0] == Report.RingHarness.ChildVerb)
            return Report.RingHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == Report.ScaleHarness.ChildVerb)
            return Report.ScaleHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == OpCount.OpCountHarness.Verb)
            return OpCount.OpCountHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == ContendHarness.ParentVerb)
            return ContendHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == ContendHarness.ChildVerb)
            return ContendHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == PingPongHarness.ParentVerb)
            return PingPongHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == PingPongHarness.ChildVerb)
            return PingPongHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == ShmMqHarness.ParentVerb)
            return ShmMqHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == ShmMqHarness.ChildVerb)
            return ShmMqHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == Buffers.BufferHarness.ParentVerb)
            return Buffers.BufferHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == Buffers.BufferHarness.ChildVerb)
            return Buffers.BufferHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == Wal.WalHarness.ParentVerb)
            return Wal.WalHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == Wal.WalHarness.ChildVerb)
            return Wal.WalHarness.Child(args[1..]);
        if (args.Length > 0 && args[0] == Lmgr.LockManagerHarness.ParentVerb)
            return Lmgr.LockManagerHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == Lmgr.LockManagerHarness.ChildVerb)
            return Lmgr.LockManagerHarness.Child(args[1..]);
        IConfig config = DefaultConfig.Instance.WithArtifactsPath(ArtifactsPath());
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
        return 0;
    }

    private static string ArtifactsPath()
    {
        string? projectDir = typeof(Program).Assembly
            .GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "PgIpc.Perf.ProjectDirectory")?.Value;
        string root = projectDir is not null && Directory.Exists(projectDir) ? projectDir : Directory.GetCurrentDirectory();
        return Path.Combine(root, "BenchmarkDotNet.Artifacts");
    }
}

/*-------------------------------------------------------------------------
 * Program.cs
 *   Entry point of the PgIpc micro-benchmarks.
 *
 * NOTES
 *   dotnet run -c Release --project perf -- --filter '*'
 *
 *   BenchmarkSwitcher picks the classes the filter names. Unless the
 *   command line says otherwise (--artifacts), results go to
 *   perf/BenchmarkDotNet.Artifacts rather than the working directory, so a
 *   run from the repository root leaves nothing outside perf/.
 *-------------------------------------------------------------------------
 */
using System.Reflection;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace PgIpc.Perf;

public static class Program
{
    public static int Main(string[] args)
    {
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

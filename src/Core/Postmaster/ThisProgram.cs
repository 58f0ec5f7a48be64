/*-------------------------------------------------------------------------
 * ThisProgram.cs
 *   Starting the running program again as a child: the executable, and the
 *   arguments that make it run a given verb, whether the program is an
 *   apphost / single-file executable or an assembly run by the dotnet host.
 *
 * NOTES
 *   PostgreSQL's postmaster forks, so a child is this program by
 *   construction (and with EXEC_BACKEND it re-execs its own path, found
 *   once at start-up, with "--forkbackend" and the child's kind). PgIpc
 *   always execs. The program's file is Environment.ProcessPath; when that
 *   is the dotnet host ("dotnet app.dll verb ..."), the host needs the
 *   entry assembly's path as its first argument, before the verb.
 *
 *   Two forms, one rule: ChildSpec.ForThisProgram for children the
 *   supervisor starts (static, dynamic and parallel workers), and
 *   ThisProgram.StartInfo for callers that start and drive the process
 *   themselves (test harnesses, benchmarks), who add redirections or
 *   environment variables to the ProcessStartInfo it returns.
 *
 *   Mirrors the self-exec in internal_forkexec() (postmaster/launch_backend.c)
 *   and find_my_exec() (common/exec.c).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Reflection;

namespace PgIpc.Postmaster;

/// <summary>
/// The running program as a command line that starts it again: its executable, then (when the executable is the
/// dotnet host) the entry assembly's path, then a verb and its arguments.
/// </summary>
public static class ThisProgram
{
    /// <summary>The running program's executable (<see cref="Environment.ProcessPath"/>): an apphost, or the dotnet host.</summary>
    /// <exception cref="PgIpcException">The runtime does not know the executable's path.</exception>
    public static string ExecutablePath
        => Environment.ProcessPath ?? throw new PgIpcException("cannot start this program again as a child: the runtime does not know its executable's path (Environment.ProcessPath is null)");

    /// <summary>True when the program runs as <c>dotnet app.dll</c>: the child's arguments then start with the entry assembly's path.</summary>
    public static bool RunsOnDotnetHost => IsDotnetHost(ExecutablePath);

    /// <summary>
    /// The file name and arguments that run this program with <paramref name="verb"/> and <paramref name="arguments"/>:
    /// <c>exe verb args...</c>, or <c>dotnet entry.dll verb args...</c> under the dotnet host.
    /// </summary>
    /// <exception cref="PgIpcException">The executable, or under the dotnet host the entry assembly's file, is unknown.</exception>
    public static (string FileName, List<string> Arguments) Command(string verb, IEnumerable<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(verb);
        ArgumentNullException.ThrowIfNull(arguments);
        string exe = ExecutablePath;
        List<string> args = [];
        if (IsDotnetHost(exe))
            args.Add(EntryAssemblyPath());
        args.Add(verb);
        args.AddRange(arguments);
        return (exe, args);
    }

    /// <summary>
    /// A <see cref="ProcessStartInfo"/> that runs this program with <paramref name="verb"/> and
    /// <paramref name="arguments"/> (see <see cref="Command"/>): no shell, nothing redirected, the environment
    /// inherited. The caller adds redirections or variables, then starts it.
    /// </summary>
    public static ProcessStartInfo StartInfo(string verb, params IEnumerable<string> arguments)
    {
        (string file, List<string> args) = Command(verb, arguments);
        var psi = new ProcessStartInfo { FileName = file, UseShellExecute = false };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>True when <paramref name="executablePath"/> names the dotnet host (dotnet, dotnet.exe).</summary>
    internal static bool IsDotnetHost(string executablePath)
        => Path.GetFileNameWithoutExtension(executablePath).Equals("dotnet", StringComparison.OrdinalIgnoreCase);

    // Only called under the dotnet host ("dotnet app.dll"), which never runs a single-file or NativeAOT program:
    // those are their own executable (Environment.ProcessPath) and never reach here. An empty Location throws below.
    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("SingleFile", "IL3000:Avoid accessing Assembly file path when publishing as a single file",
        Justification = "Only reached under the dotnet host, where the entry assembly is a file; an empty path is reported.")]
    private static string EntryAssemblyPath()
    {
        string? path = Assembly.GetEntryAssembly()?.Location;
        if (string.IsNullOrEmpty(path))
            throw new PgIpcException("cannot start this program again as a child: it runs on the dotnet host but its entry assembly has no file");
        return path;
    }
}

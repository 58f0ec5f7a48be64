/*-------------------------------------------------------------------------
 * ChildSpec.cs
 *   What the supervisor starts: a name, an executable with its arguments,
 *   the kind of participant slot it takes, and whether it is restarted.
 *
 * NOTES
 *   PostgreSQL's BackgroundWorker struct names a library and a function to
 *   call in the forked child; PgIpc execs, so a child is named by file and
 *   arguments (an executable, or the dotnet host with an assembly first);
 *   ForThisProgram names this program again (ThisProgram.cs).
 *   The spec travels through shared memory for dynamic workers, so it has a
 *   fixed encoding (file, then arguments, NUL-separated UTF-8) and limits.
 *
 *   Mirrors BackgroundWorker in src/include/postmaster/bgworker.h.
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Proc;

namespace PgIpc.Postmaster;

/// <summary>
/// A child process the supervisor runs.
/// </summary>
/// <param name="Name">Shown in logs and status (bgw_name); at most 63 UTF-8 bytes.</param>
/// <param name="FileName">The executable (or the dotnet host).</param>
/// <param name="Arguments">Its arguments (for the dotnet host, the assembly first).</param>
/// <param name="Kind">The kind of participant slot the child joins with (passed as PGIPC_PROC_KIND).</param>
/// <param name="RestartIntervalMs">
/// -1: never restarted (BGW_NEVER_RESTART), forgotten at a crash restart. 0 or more: permanent; after a crash
/// restart it is started again once this many milliseconds have passed (bgw_restart_time).
/// </param>
public sealed record ChildSpec(string Name, string FileName, IReadOnlyList<string> Arguments, ProcKind Kind = ProcKind.BackgroundWorker, int RestartIntervalMs = -1)
{
    /// <summary>A restart interval meaning: never restart this child (BGW_NEVER_RESTART).</summary>
    public const int NeverRestart = -1;

    /// <summary>True when the child is started again after a crash restart.</summary>
    public bool IsPermanent => RestartIntervalMs >= 0;

    /// <summary>A child run as `dotnet <paramref name="assemblyPath"/> args...` with the current dotnet host.</summary>
    public static ChildSpec ForDotnet(string name, string assemblyPath, IEnumerable<string> arguments, ProcKind kind = ProcKind.BackgroundWorker, int restartIntervalMs = NeverRestart)
    {
        string host = Environment.ProcessPath is { } p && ThisProgram.IsDotnetHost(p) ? p : "dotnet";
        return new ChildSpec(name, host, [assemblyPath, .. arguments], kind, restartIntervalMs);
    }

    /// <summary>
    /// A child that runs this program again with <paramref name="verb"/> and <paramref name="arguments"/>: the
    /// program's executable, with the entry assembly's path first when that is the dotnet host
    /// (<see cref="ThisProgram.Command"/>). The supervisor adds the cluster's handle in the environment, and a
    /// parallel context its own arguments after these.
    /// </summary>
    /// <exception cref="PgIpcException">This program's executable (or entry assembly) cannot be found.</exception>
    public static ChildSpec ForThisProgram(string name, string verb, IEnumerable<string> arguments, ProcKind kind = ProcKind.BackgroundWorker, int restartIntervalMs = NeverRestart)
    {
        (string file, List<string> args) = ThisProgram.Command(verb, arguments);
        return new ChildSpec(name, file, args, kind, restartIntervalMs);
    }

    internal void Validate()
    {
        if (string.IsNullOrEmpty(Name) || Encoding.UTF8.GetByteCount(Name) >= BackgroundWorkerSlot.NameCapacity)
            throw new ArgumentException($"child name \"{Name}\" must be 1..{BackgroundWorkerSlot.NameCapacity - 1} UTF-8 bytes", nameof(Name));
        if (string.IsNullOrEmpty(FileName))
            throw new ArgumentException($"child \"{Name}\" has no file name", nameof(FileName));
        if ((uint)Kind > (uint)ProcKind.BackgroundWorker)
            throw new ArgumentOutOfRangeException(nameof(Kind), Kind, $"child \"{Name}\": unknown participant kind");
        if (RestartIntervalMs < NeverRestart)
            throw new ArgumentOutOfRangeException(nameof(RestartIntervalMs), RestartIntervalMs, $"child \"{Name}\": the restart interval is -1 (never) or a number of milliseconds");
        foreach (string s in Arguments.Prepend(FileName))
            if (s.Contains('\0'))
                throw new ArgumentException($"child \"{Name}\": an argument contains a NUL character", nameof(Arguments));
    }

    internal static byte[] EncodeCommand(ChildSpec spec)
    {
        spec.Validate();
        byte[] bytes = Encoding.UTF8.GetBytes(string.Join('\0', spec.Arguments.Prepend(spec.FileName)));
        if (bytes.Length > BackgroundWorkerSlot.CommandCapacity)
            throw new ArgumentException($"child \"{spec.Name}\": file name and arguments take {bytes.Length} UTF-8 bytes; a worker slot holds {BackgroundWorkerSlot.CommandCapacity}", nameof(spec));
        return bytes;
    }

    internal static ChildSpec DecodeCommand(string name, byte[] command, ProcKind kind, int restartIntervalMs)
    {
        string[] parts = Encoding.UTF8.GetString(command).Split('\0');
        return new ChildSpec(name, parts[0], parts[1..], kind, restartIntervalMs);
    }
}

/*-------------------------------------------------------------------------
 * DsmCluster.cs
 *   A main segment with participant slots and a DSM control table, as the
 *   DSM tests (and their worker processes) use it; OS-object probes.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Dsm;

internal sealed class DsmCluster : IDisposable
{
    private readonly Supervisor _supervisor;

    public ShmemSegment Segment => _supervisor.Cluster.Segment;
    public ProcArray Procs => _supervisor.Cluster.Procs;
    public DsmRegistry Registry => _supervisor.Cluster.Dsm;

    private DsmCluster(Supervisor supervisor)
    {
        _supervisor = supervisor;
    }

    public static DsmCluster Create(IPgIpcPlatform platform, DsmImplementation kind, string? dataDirectory = null, int maxSegments = 16, string? key = null, long mainRegion = 0)
    {
        Supervisor s = new ClusterBuilder(key ?? TestEnvironment.UniqueKey("dsm"))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 4, MaxBackgroundWorkers: 2))
            .WithDsmOptions(new DsmOptions(maxSegments, kind, dataDirectory, mainRegion))
            .WithLog(TextWriter.Null)
            .Build();
        return new DsmCluster(s);
    }

    public void Dispose() => _supervisor.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);

    /// <summary>Whether the OS object of <paramref name="handle"/> exists, asked the way an administrator would.</summary>
    public static bool OsObjectExists(IPgIpcPlatform platform, DsmImplementation kind, uint handle, string? dataDirectory)
    {
        string name = platform.Dsm.NameOf(kind, handle, dataDirectory);
        switch (kind)
        {
            case DsmImplementation.Posix:
                return File.Exists("/dev/shm" + name);
            case DsmImplementation.Mmap:
                return File.Exists(name);
            case DsmImplementation.SysV:
            {
                var psi = new ProcessStartInfo("ipcs", "-m") { RedirectStandardOutput = true, UseShellExecute = false };
                using Process p = Process.Start(psi)!;
                string text = p.StandardOutput.ReadToEnd();
                p.WaitForExit(10_000);
                return text.Split('\n').Any(l => l.StartsWith(name + " ", StringComparison.Ordinal));
            }
            default:
                try
                {
                    platform.Dsm.Attach(kind, handle, dataDirectory).Dispose();
                    return true;
                }
                catch (SharedMemoryNotFoundException)
                {
                    return false;
                }
        }
    }

    public static string NewDataDirectory()
    {
        string d = Path.Combine(Path.GetTempPath(), "pgipc-dsm-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..8]);
        // 0700, as a data directory must be (DataDirectoryPermissionException otherwise); Windows has no modes.
        if (OperatingSystem.IsWindows())
            Directory.CreateDirectory(d);
        else
            Directory.CreateDirectory(d, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return d;
    }
}

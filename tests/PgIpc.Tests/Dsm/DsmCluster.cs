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
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Dsm;

internal sealed class DsmCluster : IDisposable
{
    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }
    public DsmRegistry Registry { get; }

    private DsmCluster(ShmemSegment segment, ProcArray procs, DsmRegistry registry)
    {
        Segment = segment;
        Procs = procs;
        Registry = registry;
    }

    public static DsmCluster Create(IPgIpcPlatform platform, DsmImplementation kind, string? dataDirectory = null, int maxSegments = 16, string? key = null)
    {
        var options = new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 4, MaxBackgroundWorkers: 2);
        var dsm = new DsmOptions(maxSegments, kind, dataDirectory);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(options))
            .RequestAddinShmemSpace(DsmRegistry.ShmemName, DsmRegistry.ShmemSize(dsm));
        ShmemSegment seg = ShmemSegment.Create(key ?? TestEnvironment.UniqueKey("dsm"), sizes, platform);
        try
        {
            ProcArray procs = ProcArray.Init(seg, options, out _);
            DsmRegistry reg = DsmRegistry.Init(seg, procs, dsm, out _);
            return new DsmCluster(seg, procs, reg);
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    public void Dispose()
    {
        if (Segment.IsAttached)
            Segment.Destroy();
    }

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
        Directory.CreateDirectory(d);
        return d;
    }
}

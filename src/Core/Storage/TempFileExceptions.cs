/*-------------------------------------------------------------------------
 * TempFileExceptions.cs
 *   Errors of temporary files: the per-process temp_file_limit exceeded,
 *   and an I/O error on a temporary file (a full disk among them).
 *
 * NOTES
 *   PostgreSQL raises ERRCODE_CONFIGURATION_LIMIT_EXCEEDED "temporary file
 *   size exceeds temp_file_limit (%dkB)" from FileWrite (fd.c), and
 *   "could not write to file ...: No space left on device" when a write
 *   fails with ENOSPC (FileWrite sets errno to ENOSPC when a short write
 *   left it unset). Both are ERRORs: the query fails, the server goes on.
 *   Here each is a typed exception carrying the values, so a caller can
 *   tell the limit from the disk.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Storage;

/// <summary>A write would take this process's temporary files past temp_file_limit (fd.c's check in FileWrite).</summary>
public sealed class TempFileLimitExceededException : PgIpcException
{
    /// <summary>The limit, in KiB (temp_file_limit).</summary>
    public long LimitKiB { get; }

    /// <summary>Bytes of temporary files this process held when the write was refused.</summary>
    public long CurrentBytes { get; }

    /// <summary>Bytes the write would have added.</summary>
    public long RequestedBytes { get; }

    /// <summary>Creates the exception.</summary>
    public TempFileLimitExceededException(string path, long limitKiB, long currentBytes, long requestedBytes)
        : base($"temporary file size exceeds temp_file_limit ({limitKiB}kB): writing \"{path}\" would add {requestedBytes} bytes to the {currentBytes} bytes of temporary files this process holds")
    {
        LimitKiB = limitKiB;
        CurrentBytes = currentBytes;
        RequestedBytes = requestedBytes;
    }
}

/// <summary>An I/O error on a temporary file: the file, the operation and the OS's reason.</summary>
public sealed class TempFileIOException : PgIpcException
{
    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>True when the OS said the disk is full (ENOSPC, ERROR_DISK_FULL).</summary>
    public bool DiskFull { get; }

    /// <summary>Creates the exception from the runtime's <paramref name="inner"/> error.</summary>
    public TempFileIOException(string operation, string path, IOException inner)
        : base(Describe(operation, path, inner), inner)
    {
        Path = path;
        DiskFull = IsDiskFull(inner);
    }

    private static string Describe(string operation, string path, IOException e)
        => IsDiskFull(e)
            ? $"could not {operation} temporary file \"{path}\": No space left on device ({e.Message})"
            : $"could not {operation} temporary file \"{path}\": {e.Message}";

    /// <summary>ENOSPC (28: the runtime's HResult on Unix is the errno) or ERROR_DISK_FULL / ERROR_HANDLE_DISK_FULL on Windows.</summary>
    internal static bool IsDiskFull(IOException e)
        => e.HResult is 28 or unchecked((int)0x80070070) or unchecked((int)0x80070027)
           || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase)
           || e.Message.Contains("not enough space", StringComparison.OrdinalIgnoreCase);
}

// <sys/stat.h>: mkdir and mkfifo. Both return -1 and set errno on failure (EEXIST when the name exists);
// the mode is filtered by the umask.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    [LibraryImport(Libraries.Libc, EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string pathname, uint mode);

    [LibraryImport(Libraries.Libc, EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string pathname, uint mode);
}

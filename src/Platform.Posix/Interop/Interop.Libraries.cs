// Native libraries the POSIX backend binds to.
namespace PgIpc.Platform.Posix.Interop;

internal static class Libraries
{
    /// <summary>The C library; "libc" resolves to libc.so.6 on glibc and libSystem on macOS.</summary>
    public const string Libc = "libc";
}

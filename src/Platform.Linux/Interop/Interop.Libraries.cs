// Native libraries the Linux backend binds to itself, for what Tmds.LibC (which binds "libc.so.6") lacks.
namespace PgIpc.Platform.Linux.Interop;

internal static class Libraries
{
    public const string Libc = "libc";
}

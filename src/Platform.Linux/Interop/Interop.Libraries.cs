// Native libraries the Linux backend binds to.
namespace PgIpc.Platform.Linux.Interop;

internal static class Libraries
{
    public const string Libc = "libc";
}

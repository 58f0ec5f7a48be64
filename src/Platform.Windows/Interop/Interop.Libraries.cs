// Native libraries the Windows backend binds to.
namespace PgIpc.Platform.Windows.Interop;

internal static class Libraries
{
    public const string Kernel32 = "kernel32";
    public const string Advapi32 = "advapi32";
    public const string Ws2_32 = "ws2_32";
}

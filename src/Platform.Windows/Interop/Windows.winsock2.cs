// <winsock2.h>: socket event objects (WSAEventSelect) and the two probes the wait set makes. Names as
// TerraFX.Interop.Windows spells them.
//
// Winsock's errors are the thread's last error (WSAGetLastError is GetLastError; dotnet/runtime's own Winsock
// bindings rely on the same), so SetLastError = true plus Marshal.GetLastPInvokeError reads them.
// WSAStartup is not bound: these calls only ever act on a SOCKET somebody in this process already created,
// which required WSAStartup there; WSACreateEvent needs none.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    // Network events (lNetworkEvents bits) and their indexes in WSANETWORKEVENTS.iErrorCode.
    public const int FD_READ = 1 << 0;
    public const int FD_WRITE = 1 << 1;
    public const int FD_OOB = 1 << 2;
    public const int FD_ACCEPT = 1 << 3;
    public const int FD_CONNECT = 1 << 4;
    public const int FD_CLOSE = 1 << 5;
    public const int FD_READ_BIT = 0;
    public const int FD_WRITE_BIT = 1;
    public const int FD_ACCEPT_BIT = 3;
    public const int FD_CONNECT_BIT = 4;
    public const int FD_CLOSE_BIT = 5;
    public const int FD_MAX_EVENTS = 10;

    public const int SOCKET_ERROR = -1;
    public const int SOL_SOCKET = 0xffff;
    public const int SO_TYPE = 0x1008;
    public const int SOCK_STREAM = 1;
    public const int MSG_PEEK = 0x2;
    /// <summary>WSACreateEvent's failure value.</summary>
    public const nint WSA_INVALID_EVENT = 0;

    /// <summary>What WSAEnumNetworkEvents reports: the events recorded since the last call, and an error per event bit.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct WSANETWORKEVENTS
    {
        public int lNetworkEvents;
        public fixed int iErrorCode[FD_MAX_EVENTS];
    }

    /// <summary>A manual-reset, non-signalled, unnamed event; WSA_INVALID_EVENT on failure. Close with WSACloseEvent.</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "WSACreateEvent", SetLastError = true)]
    public static partial nint WSACreateEvent();

    /// <summary>Nonzero on success.</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "WSACloseEvent", SetLastError = true)]
    public static partial int WSACloseEvent(nint hEvent);

    /// <summary>
    /// 0 or SOCKET_ERROR. Associates the socket with the event for lNetworkEvents (0 with a NULL event cancels),
    /// replaces any earlier association, clears the socket's record of network events, and makes the socket
    /// non-blocking. An event that is already true is recorded (and the event set) at once, except FD_WRITE,
    /// which Winsock records only on connect/accept and after a send failed with WSAEWOULDBLOCK.
    /// </summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "WSAEventSelect", SetLastError = true)]
    public static partial int WSAEventSelect(nint s, nint hEventObject, int lNetworkEvents);

    /// <summary>0 or SOCKET_ERROR. Reads and clears the socket's record of network events, and resets hEventObject.</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "WSAEnumNetworkEvents", SetLastError = true)]
    public static partial int WSAEnumNetworkEvents(nint s, nint hEventObject, WSANETWORKEVENTS* lpNetworkEvents);

    /// <summary>Bytes received (0: the peer shut down), or SOCKET_ERROR (WSAEWOULDBLOCK: nothing to read yet).</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "recv", SetLastError = true)]
    public static partial int recv(nint s, byte* buf, int len, int flags);

    /// <summary>Bytes sent, or SOCKET_ERROR (WSAEWOULDBLOCK: no room).</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "send", SetLastError = true)]
    public static partial int send(nint s, byte* buf, int len, int flags);

    /// <summary>0 or SOCKET_ERROR (WSAENOTSOCK when s is not a socket).</summary>
    [LibraryImport(Libraries.Ws2_32, EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int getsockopt(nint s, int level, int optname, byte* optval, int* optlen);
}

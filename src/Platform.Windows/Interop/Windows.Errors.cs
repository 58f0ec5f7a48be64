// <winerror.h>: the GetLastError values this backend reacts to (WSA* are Winsock's, reported the same way).
namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const int ERROR_FILE_NOT_FOUND = 2;
    public const int ERROR_ACCESS_DENIED = 5;
    public const int ERROR_INVALID_HANDLE = 6;
    public const int ERROR_NOT_ENOUGH_MEMORY = 8;
    public const int ERROR_INVALID_PARAMETER = 87;
    public const int ERROR_INVALID_NAME = 123;
    public const int ERROR_ALREADY_EXISTS = 183;
    public const int ERROR_TOO_MANY_POSTS = 298;
    public const int ERROR_NOT_ALL_ASSIGNED = 1300;
    public const int ERROR_PRIVILEGE_NOT_HELD = 1314;
    public const int ERROR_NO_SYSTEM_RESOURCES = 1450;
    public const int ERROR_COMMITMENT_LIMIT = 1455;
    public const int WSAEINVAL = 10022;
    public const int WSAEWOULDBLOCK = 10035;
    public const int WSAENOTSOCK = 10038;
    public const int WSAENETRESET = 10052;
    public const int WSAECONNABORTED = 10053;
    public const int WSAECONNRESET = 10054;
    public const int WSAENOTCONN = 10057;
    public const int WSAESHUTDOWN = 10058;
    public const int WSANOTINITIALISED = 10093;

    public static string ErrorName(int code) => code switch
    {
        ERROR_FILE_NOT_FOUND => "ERROR_FILE_NOT_FOUND",
        ERROR_ACCESS_DENIED => "ERROR_ACCESS_DENIED",
        ERROR_INVALID_HANDLE => "ERROR_INVALID_HANDLE",
        ERROR_NOT_ENOUGH_MEMORY => "ERROR_NOT_ENOUGH_MEMORY",
        ERROR_INVALID_PARAMETER => "ERROR_INVALID_PARAMETER",
        ERROR_INVALID_NAME => "ERROR_INVALID_NAME",
        ERROR_ALREADY_EXISTS => "ERROR_ALREADY_EXISTS",
        ERROR_TOO_MANY_POSTS => "ERROR_TOO_MANY_POSTS",
        ERROR_NOT_ALL_ASSIGNED => "ERROR_NOT_ALL_ASSIGNED",
        ERROR_PRIVILEGE_NOT_HELD => "ERROR_PRIVILEGE_NOT_HELD",
        ERROR_NO_SYSTEM_RESOURCES => "ERROR_NO_SYSTEM_RESOURCES",
        ERROR_COMMITMENT_LIMIT => "ERROR_COMMITMENT_LIMIT",
        WSAEINVAL => "WSAEINVAL",
        WSAEWOULDBLOCK => "WSAEWOULDBLOCK",
        WSAENOTSOCK => "WSAENOTSOCK",
        WSAENETRESET => "WSAENETRESET",
        WSAECONNABORTED => "WSAECONNABORTED",
        WSAECONNRESET => "WSAECONNRESET",
        WSAENOTCONN => "WSAENOTCONN",
        WSAESHUTDOWN => "WSAESHUTDOWN",
        WSANOTINITIALISED => "WSANOTINITIALISED",
        _ => "error " + code,
    };

    /// <summary>An exception naming the call, the error's symbol and the system message.</summary>
    public static PgIpcOsException Exception(string call, int code, string detail)
    {
        string msg = System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(code);
        return new PgIpcOsException(call, code, ErrorName(code), detail.Length > 0 ? $"{msg}; {detail}" : msg);
    }
}

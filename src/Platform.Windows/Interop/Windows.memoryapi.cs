// <memoryapi.h>, <winbase.h>: file mappings and views. Names as TerraFX.Interop.Windows spells them.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint PAGE_READWRITE = 0x04;
    public const uint FILE_MAP_WRITE = 0x0002;
    public const uint FILE_MAP_READ = 0x0004;
    public const uint FILE_MAP_ALL_ACCESS = 0x000F001F;
    /// <summary>INVALID_HANDLE_VALUE as hFile: back the mapping by the paging file.</summary>
    public static readonly nint INVALID_HANDLE_VALUE = -1;

    [StructLayout(LayoutKind.Sequential)]
    public struct MEMORY_BASIC_INFORMATION
    {
        public void* BaseAddress;
        public void* AllocationBase;
        public uint AllocationProtect;
        public ushort PartitionId;
        public nuint RegionSize;
        public uint State;
        public uint Protect;
        public uint Type;
    }

    /// <summary>Returns NULL on failure. On success GetLastError is ERROR_ALREADY_EXISTS when the name existed (the existing object is returned).</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "CreateFileMappingW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
    public static partial nint CreateFileMappingW(nint hFile, void* lpFileMappingAttributes, uint flProtect, uint dwMaximumSizeHigh, uint dwMaximumSizeLow, string lpName);

    /// <summary>Returns NULL on failure (ERROR_FILE_NOT_FOUND when no such mapping).</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "OpenFileMappingW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
    public static partial nint OpenFileMappingW(uint dwDesiredAccess, int bInheritHandle, string lpName);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "MapViewOfFile", SetLastError = true)]
    public static partial void* MapViewOfFile(nint hFileMappingObject, uint dwDesiredAccess, uint dwFileOffsetHigh, uint dwFileOffsetLow, nuint dwNumberOfBytesToMap);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "UnmapViewOfFile", SetLastError = true)]
    public static partial int UnmapViewOfFile(void* lpBaseAddress);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "VirtualQuery", SetLastError = true)]
    public static partial nuint VirtualQuery(void* lpAddress, MEMORY_BASIC_INFORMATION* lpBuffer, nuint dwLength);
}

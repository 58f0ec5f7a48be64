/*-------------------------------------------------------------------------
 * DsmRegistry.MainRegion.cs
 *   Dynamic segments carved out of the main segment (min_dynamic_shared_
 *   memory): a region reserved at start, handed out in 4 KiB pages before
 *   any OS segment is made.
 *
 * NOTES
 *   PostgreSQL 14 added min_dynamic_shared_memory: dsm_postmaster_startup
 *   reserves that many bytes of the main segment and puts a FreePageManager
 *   over them; dsm_create tries it first (under the control lock) and only
 *   makes an OS segment when it has no run of pages left. Such a segment
 *   costs no system call to create, attach or destroy, and every process
 *   already maps it. PgIpc does the same with a first-fit bitmap over the
 *   pages, protected as the items are (the control LWLock and, inside it,
 *   ItemsLock): a region of a few thousand pages is scanned in
 *   microseconds, and the scan runs once per create and once per destroy.
 *
 *   Layout, inside "PgIpc.DsmControl", after the data directory bytes:
 *     bitmap  ulong[(MainRegionPages + 63) / 64] at a 64-byte boundary;
 *             bit set = page in use. Protector: Lock + ItemsLock.
 *     pages   MainRegionPages * 4096 bytes at the first 4 KiB boundary of
 *             the segment after the bitmap (the segment's base is page
 *             aligned in every process, so the pages are too).
 *   The header's MainRegionPages is immutable after Init; MainRegionFree is
 *   written under Lock + ItemsLock. An item made here has Implementation
 *   MainRegion and FirstPage = its first page; OS-backed items have
 *   FirstPage -1.
 *
 *   A segment from the region has the same handle, reference count,
 *   pinning and detach rules as an OS one. What differs: no OS object
 *   (nothing in the control file, nothing for crash clean-up, which throws
 *   the whole main segment away anyway), and the pages are zeroed by the
 *   creator after the locks (nobody else knows the handle before Create
 *   returns), as dsm_create promises zero-filled memory.
 *
 *   Mirrors src/backend/storage/ipc/dsm.c (dsm_main_space_begin,
 *   dsm_main_space_fpm, is_main_region_dsm_handle).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Dsm;

public sealed unsafe partial class DsmRegistry
{
    /// <summary>Page size of the main region (FPM_PAGE_SIZE).</summary>
    public const int MainRegionPageSize = 4096;

    /// <summary>Bytes of the bitmap and pages for <paramref name="pages"/> pages, with room to align both.</summary>
    internal static long MainRegionBytes(int pages)
        => pages == 0 ? 0 : 64 + BitmapWords(pages) * 8L + (long)pages * MainRegionPageSize + MainRegionPageSize;

    private static int BitmapWords(int pages) => (pages + 63) / 64;

    /// <summary>Pages of the main region for <paramref name="options"/> (the size rounded up to whole pages).</summary>
    internal static int MainRegionPages(DsmOptions options)
        => (int)((options.MainRegionSize + MainRegionPageSize - 1) / MainRegionPageSize);

    /// <summary>Where the bitmap starts inside the control struct (after the data directory bytes, 64-byte aligned).</summary>
    private static long BitmapOffset(int maxItems)
        => (sizeof(DsmControlHeader) + (long)maxItems * sizeof(DsmControlItem) + sizeof(int) + DsmOptions.MaxDataDirectoryBytes + 63) & ~63L;

    private ulong* _bitmap;
    private byte* _pages;
    private int _mainPages;

    /// <summary>Pages of the main region (0: the cluster reserved none).</summary>
    public int MainRegionPageCount => _mainPages;

    /// <summary>Pages of the main region now free.</summary>
    public int MainRegionFreePages
    {
        get
        {
            using (LockControl())
                return _header->MainRegionFree;
        }
    }

    /// <summary>Finds the bitmap and the pages in this process (after the layout was validated).</summary>
    private void MapMainRegion(ShmemRegionLayout region)
    {
        _mainPages = region.Pages;
        if (_mainPages == 0)
            return;
        _bitmap = (ulong*)((byte*)_header + BitmapOffset(_maxItems));
        byte* afterBitmap = (byte*)(_bitmap + BitmapWords(_mainPages));
        _pages = (byte*)(((nint)afterBitmap + MainRegionPageSize - 1) & ~(nint)(MainRegionPageSize - 1));
    }

    /// <summary>The region's pages as this process sees them: count, validated at attach.</summary>
    internal readonly record struct ShmemRegionLayout(int Pages);

    /// <summary>
    /// Takes a run of pages for <paramref name="size"/> bytes; -1 when the region has none. Caller holds the control
    /// lock (Lock + ItemsLock). First fit over the bitmap; a word with every bit set is skipped whole.
    /// </summary>
    private int AllocateMainPages(long size)
    {
        if (_mainPages == 0)
            return -1;
        long need = (size + MainRegionPageSize - 1) / MainRegionPageSize;
        if (need > _header->MainRegionFree)
            return -1;
        int run = 0, start = 0;
        for (int p = 0; p < _mainPages; p++)
        {
            if ((p & 63) == 0 && run == 0 && _bitmap[p >> 6] == ulong.MaxValue)
            {
                p += 63; // a full word: no free page in it
                continue;
            }
            if ((_bitmap[p >> 6] & (1UL << (p & 63))) != 0)
            {
                run = 0;
                continue;
            }
            if (run++ == 0)
                start = p;
            if (run == need)
            {
                SetPages(start, (int)need, true);
                _header->MainRegionFree -= (int)need;
                return start;
            }
        }
        return -1;
    }

    /// <summary>Gives pages back. Caller holds the control lock.</summary>
    private void FreeMainPages(int first, long size)
    {
        int n = (int)((size + MainRegionPageSize - 1) / MainRegionPageSize);
        SetPages(first, n, false);
        _header->MainRegionFree += n;
    }

    private void SetPages(int first, int n, bool used)
    {
        for (int p = first; p < first + n; p++)
        {
            if (used)
                _bitmap[p >> 6] |= 1UL << (p & 63);
            else
                _bitmap[p >> 6] &= ~(1UL << (p & 63));
        }
    }

    /// <summary>
    /// Checks a main-region item's page range against the validated region (a corrupt FirstPage or Size would map
    /// memory outside it). Throws <see cref="ShmemCorruptException"/>.
    /// </summary>
    private void CheckMainItem(int slot, int firstPage, long size)
    {
        long pages = (size + MainRegionPageSize - 1) / MainRegionPageSize;
        if (firstPage < 0 || size <= 0 || firstPage + pages > _mainPages)
            throw new ShmemCorruptException($"DSM control table of segment {_segment.Handle.Id}, item {slot}", "FirstPage / Size",
                $"{firstPage} / {size} is not a page range of the main region's {_mainPages} pages");
    }

    /// <summary>A main-region segment's memory in this process: part of the main segment's mapping, nothing to unmap.</summary>
    private sealed class MainRegionMapping(byte* address, long size, uint handle) : IMappedSegment
    {
        public string Id { get; } = $"main region segment {handle}";
        public nint BaseAddress => (nint)address;
        public long Size => size;
        public bool HugePages => false;
        public void Dispose() { }
    }

    /// <summary>Creates a segment in the main region; null when the region has no room (then an OS segment is made).</summary>
    private DsmSegment? CreateInMainRegion(long size)
    {
        if (_mainPages == 0)
            return null;
        int slot = -1, first = -1;
        uint handle = 0;
        using (LockControl())
        {
            int n = UsedItems();
            for (int i = 0; i < n && slot < 0; i++)
                if (_items[i].RefCnt == 0)
                    slot = i;
            if (slot < 0 && n < _maxItems)
            {
                slot = n;
                _header->NItems = n + 1;
            }
            if (slot < 0)
                return null; // no slot: Create's OS path reports it the usual way
            first = AllocateMainPages(size);
            if (first < 0)
            {
                if (slot == n)
                    _header->NItems = n; // give the high-water slot back
                return null;
            }
            // Odd handles are main-region ones (OS handles are even): unique among live items.
            do
            {
                handle = (MainRegionHandleSeed() << 1) | 1u;
            }
            while (HandleInUse(handle, n + 1));
            DsmControlItem* it = &_items[slot];
            it->Handle = handle;
            it->RefCnt = 2; // 1 for existing, 1 for this mapping
            it->Size = size;
            it->Implementation = (int)DsmImplementation.MainRegion;
            it->Pinned = 0;
            it->FirstPage = first;
            it->PinnedOsHandle = 0;
            _header->CreatedCount++;
        }
        byte* p = _pages + (long)first * MainRegionPageSize;
        System.Runtime.InteropServices.NativeMemory.Clear(p, (nuint)size); // after the locks; nobody knows the handle yet
        return Track(new DsmSegment(this, new MainRegionMapping(p, size, handle), handle, size, DsmImplementation.MainRegion, slot));
    }

    private bool HandleInUse(uint handle, int used)
    {
        for (int i = 0; i < used; i++)
            if (_items[i].RefCnt != 0 && _items[i].Handle == handle)
                return true;
        return false;
    }

    // A per-process xorshift: called under the spinlock, so no allocation and no system call (RandomNumberGenerator).
    private uint _handleState = (uint)Environment.TickCount ^ (uint)Environment.ProcessId * 2654435761u | 1u;

    private uint MainRegionHandleSeed()
    {
        uint x = _handleState;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        _handleState = x;
        return x & 0x7FFFFFFF;
    }

    /// <summary>Maps a main-region item for this process (Attach's path for <see cref="DsmImplementation.MainRegion"/>).</summary>
    private IMappedSegment MapMainItem(int slot, uint handle, long size, int firstPage)
    {
        CheckMainItem(slot, firstPage, size);
        return new MainRegionMapping(_pages + (long)firstPage * MainRegionPageSize, size, handle);
    }
}

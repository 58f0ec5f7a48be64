/*-------------------------------------------------------------------------
 * MemoryContextExceptions.cs
 *   Errors raised by memory contexts: a budget (work_mem-style limit)
 *   exceeded, native memory exhausted, and a corrupted or foreign chunk
 *   (overrun, double free, use after reset).
 *
 * NOTES
 *   PostgreSQL raises ERRCODE_OUT_OF_MEMORY "out of memory" with
 *   "Failed on request of size N in memory context X." (mcxt.c), and
 *   elog(WARNING/ERROR) on a bad sentinel or a bad chunk header (aset.c
 *   AllocSetCheck, mcxt.c pfree). Here each is a typed exception carrying
 *   the values so a caller (a sort, a hash join) can catch the budget one
 *   and spill to disk.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Memory;

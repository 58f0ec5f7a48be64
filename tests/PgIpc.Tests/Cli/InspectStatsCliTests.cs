/*-------------------------------------------------------------------------
 * InspectStatsCliTests.cs
 *   `pgipc inspect <handle> --activity --stats` (text and --json), run as
 *   a process against a live cluster: a participant's reported state,
 *   detail and backend type, and the background writer's and
 *   checkpointer's counters after a checkpoint.
 *
 * NOTES
 *   Unix only, as CliTests (the CLI built beside the tests).
 *-------------------------------------------------------------------------
 */
using System.Text.Json;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Stats;
using PgIpc.Tests.Buffers;

namespace PgIpc.Tests.Cli;

[OnlyOn(Os.Unix, "runs the CLI built beside the tests")]
public sealed class InspectStatsCliTests
{
    [Test]
    public void InspectShowsActivityAndStatistics()
    {
        string dir = BufferCluster.NewDataDirectory();
        try
        {
            using Supervisor supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("clistats"))
                .WithPlatform(PgIpcPlatform.Current)
                .WithDataDirectory(dir)
                .WithBufferPool(16)
                .WithLog(TextWriter.Null)
                .Build();
            Cluster cluster = supervisor.Cluster;
            using Participant me = cluster.Procs.Join(ProcKind.Backend);
            me.SetBackendType("cli-test");
            me.SetActivity(ActivityState.Active, "inspect activity test");
            string handle = cluster.Segment.Handle.ToString();

            CliResult json = Cli.Run("inspect", handle, "--activity", "--stats", "--json");
            Assert.That(json.ExitCode, Is.EqualTo(0), json.ToString());
            using JsonDocument doc = JsonDocument.Parse(json.Stdout);
            JsonElement root = doc.RootElement;
            Assert.That(root.TryGetProperty("procs", out _), Is.False, "only the views asked for");
            JsonElement mine = root.GetProperty("activity").EnumerateArray().Single(a => a.GetProperty("proc_number").GetInt32() == me.ProcNumber);
            Assert.That(mine.GetProperty("pid").GetInt32(), Is.EqualTo(Environment.ProcessId));
            Assert.That(mine.GetProperty("state").GetString(), Is.EqualTo("active"));
            Assert.That(mine.GetProperty("detail").GetString(), Is.EqualTo("inspect activity test"));
            Assert.That(mine.GetProperty("backend_type").GetString(), Is.EqualTo("cli-test"));
            Assert.That(mine.GetProperty("state_change").GetString(), Does.EndWith("Z"));
            Assert.That(mine.TryGetProperty("wait_event", out _), Is.True);
            JsonElement stats = root.GetProperty("stats");
            Assert.That(stats.GetProperty("checkpointer").GetProperty("num_requested").GetInt64(), Is.Zero);
            Assert.That(stats.GetProperty("bgwriter").TryGetProperty("buffers_clean", out _), Is.True);
            Assert.That(stats.GetProperty("bgwriter").TryGetProperty("maxwritten_clean", out _), Is.True);
            Assert.That(stats.GetProperty("checkpointer").TryGetProperty("write_time", out _), Is.True);

            // Every view when none is named (the JSON without options) includes both.
            using (JsonDocument all = JsonDocument.Parse(Cli.Run("inspect", handle, "--json").Stdout))
            {
                Assert.That(all.RootElement.TryGetProperty("activity", out _), Is.True);
                Assert.That(all.RootElement.TryGetProperty("stats", out _), Is.True);
            }

            CliResult text = Cli.Run("inspect", handle, "--activity", "--stats");
            Assert.That(text.ExitCode, Is.EqualTo(0), text.ToString());
            Assert.That(text.Stdout, Does.Contain("inspect activity test").And.Contain("cli-test").And.Contain("active"));
            Assert.That(text.Stdout, Does.Contain("buffers_clean 0").And.Contain("num_requested 0"));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }
}

/*-------------------------------------------------------------------------
 * ReportData.cs
 *   The figures of one `report` run: every measurement by id, one value per
 *   round, and the rows that set a figure beside its peer and its target.
 *
 * NOTES
 *   A figure's value in round r and its peer's value in the same round make
 *   one ratio (figure / peer, in the figure's unit); the row shows the
 *   median [min..max] of the figure, of the peer and of those per-round
 *   ratios. Only ratios within one round mean anything on a machine whose
 *   wake-up latency switches modes from one minute to the next.
 *
 *   A target is looked up by the row's id in perf/README.md's "Targets"
 *   table (TargetTable.cs): either a bound on the ratio ("ratio >= 2") or on
 *   the figure itself ("< 1 us"). A row whose peer could not run is kept,
 *   with the reason, and counts as "skipped", never as a failure.
 *-------------------------------------------------------------------------
 */
using System.Globalization;

namespace PgIpc.Perf.Report;

/// <summary>One measured quantity: a value per round (rounds where it was not measured have none).</summary>
internal sealed class Figure(string id, string unit, bool higherIsBetter)
{
    public string Id { get; } = id;
    public string Unit { get; } = unit;
    public bool HigherIsBetter { get; } = higherIsBetter;
    public SortedDictionary<int, double> ByRound { get; } = [];

    public double Median => Stats.Median(ByRound.Values);
    public double Min => ByRound.Count == 0 ? double.NaN : ByRound.Values.Min();
    public double Max => ByRound.Count == 0 ? double.NaN : ByRound.Values.Max();
}

/// <summary>A line of the report: a figure, optionally its peer, and the id its target is looked up by.</summary>
internal sealed record ReportRow(string Section, string Id, string Label, string FigureId, string? PeerId, string? PeerLabel)
{
    public string? Skipped { get; set; }

    /// <summary>Why the peer could not be measured (the figure is still shown; a ratio target is then skipped).</summary>
    public string? PeerMissing { get; set; }
}

internal static class Stats
{
    public static double Median(IEnumerable<double> values)
    {
        double[] v = [.. values.Where(x => !double.IsNaN(x))];
        if (v.Length == 0)
            return double.NaN;
        Array.Sort(v);
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    public static string Num(double v)
    {
        if (double.IsNaN(v))
            return "—";
        double a = Math.Abs(v);
        string f = a >= 1e6 ? "N0" : a >= 100 ? "F0" : a >= 10 ? "F1" : a >= 1 ? "F2" : a >= 0.01 ? "F3" : "G3";
        return v.ToString(f, CultureInfo.InvariantCulture);
    }
}

/// <summary>Every figure and row of a run, in the order they were first added.</summary>
internal sealed class ReportData
{
    private readonly Dictionary<string, Figure> _figures = [];
    private readonly List<ReportRow> _rows = [];
    private readonly HashSet<string> _rowIds = [];

    public List<string> Notes { get; } = [];
    public List<(string Title, string Text)> RawOutputs { get; } = [];
    public IReadOnlyList<ReportRow> Rows => _rows;
    public IReadOnlyDictionary<string, Figure> Figures => _figures;

    /// <summary>Records <paramref name="value"/> for figure <paramref name="id"/> in <paramref name="round"/>.</summary>
    public void Add(string id, int round, double value, string unit, bool higherIsBetter)
    {
        if (!_figures.TryGetValue(id, out Figure? f))
            _figures[id] = f = new Figure(id, unit, higherIsBetter);
        if (!double.IsNaN(value) && !double.IsInfinity(value))
            f.ByRound[round] = value;
    }

    /// <summary>Declares a row (once; later calls with the same id are ignored).</summary>
    public ReportRow Row(string section, string id, string label, string figureId, string? peerId = null, string? peerLabel = null)
    {
        if (_rowIds.Add(id))
            _rows.Add(new ReportRow(section, id, label, figureId, peerId, peerLabel));
        return _rows.First(r => r.Id == id);
    }

    /// <summary>A row that could not be measured (a peer or backend missing), with the reason.</summary>
    public void Skip(string section, string id, string label, string reason)
        => Row(section, id, label, "-", null, null).Skipped ??= reason;

    public Figure? Get(string id) => _figures.GetValueOrDefault(id);

    /// <summary>The per-round ratios figure / peer over the rounds where both were measured.</summary>
    public double[] Ratios(ReportRow row)
    {
        if (row.PeerId is null || Get(row.FigureId) is not { } f || Get(row.PeerId) is not { } p)
            return [];
        return [.. f.ByRound.Where(kv => p.ByRound.TryGetValue(kv.Key, out double pv) && pv > 0).Select(kv => kv.Value / p.ByRound[kv.Key])];
    }
}

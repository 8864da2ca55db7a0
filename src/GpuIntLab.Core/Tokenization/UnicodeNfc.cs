using System.Text;

namespace GpuIntLab.Core.Tokenization;

/// <summary>
/// Unicode Normalization Form C (UAX #15: canonical decomposition, canonical ordering, canonical
/// composition) from <see cref="UnicodeNfcData"/>. It exists because the project runs with
/// InvariantGlobalization, where <see cref="string.Normalize()"/> leaves non-ASCII text unchanged, and
/// Qwen's tokenizer.json asks for NFC before pre-tokenization.
/// </summary>
public static class UnicodeNfc
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Dictionary<int, (int First, int Second)> s_decompositions = BuildDecompositions();
    private static readonly Dictionary<long, int> s_compositions = BuildCompositions();
    private static readonly Dictionary<int, byte> s_combiningClass = BuildCombiningClasses();
    /// <summary>Every code point below this one is unchanged by NFC whatever surrounds it (no decomposition,
    /// class 0, never the second of a composition), so text made only of them needs no work.</summary>
    private static readonly int s_firstUnstable = FirstUnstable();

    public static string UnicodeVersion => UnicodeNfcData.UnicodeVersion;

    /// <summary>The NFC form of <paramref name="text"/>; a lone surrogate is kept as it is.</summary>
    public static string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int i = 0;
        while (i < text.Length && text[i] < s_firstUnstable) i++;
        if (i == text.Length) return text;

        var codePoints = new List<int>(text.Length + 8);
        for (int k = 0; k < text.Length; k++)
        {
            int cp = text[k];
            if (char.IsHighSurrogate(text[k]) && k + 1 < text.Length && char.IsLowSurrogate(text[k + 1]))
                cp = char.ConvertToUtf32(text[k], text[++k]);
            Decompose(cp, codePoints);
        }
        SortCombiningMarks(codePoints);
        Compose(codePoints);
        var sb = new StringBuilder(codePoints.Count + 4);
        foreach (int cp in codePoints)
        {
            if (cp is >= 0xD800 and <= 0xDFFF) sb.Append((char)cp); // a lone surrogate passes through
            else sb.Append(char.ConvertFromUtf32(cp));
        }
        return sb.ToString();
    }

    public static int CombiningClass(int codePoint) => s_combiningClass.TryGetValue(codePoint, out byte c) ? c : 0;

    private static void Decompose(int cp, List<int> output)
    {
        int s = cp - SBase;
        if (s is >= 0 and < SCount)
        {
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if (s_decompositions.TryGetValue(cp, out var d))
        {
            Decompose(d.First, output);
            if (d.Second >= 0) Decompose(d.Second, output);
            return;
        }
        output.Add(cp);
    }

    /// <summary>Canonical ordering: each run of non-starters is stably sorted by combining class.</summary>
    private static void SortCombiningMarks(List<int> cps)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int cc = CombiningClass(cps[i]);
            if (cc == 0) continue;
            int j = i;
            while (j > 0 && CombiningClass(cps[j - 1]) > cc)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    /// <summary>Canonical composition: each character joins the last starter unless a character between them blocks it.</summary>
    private static void Compose(List<int> cps)
    {
        int starter = -1, lastClass = 0, written = 0;
        for (int i = 0; i < cps.Count; i++)
        {
            int c = cps[i], cc = CombiningClass(c);
            bool lastIsStarter = starter == written - 1;
            if (starter >= 0 && (lastIsStarter || (lastClass != 0 && lastClass < cc)) && TryCompose(cps[starter], c, out int composite))
            {
                cps[starter] = composite;
                continue;
            }
            if (cc == 0) starter = written;
            lastClass = cc;
            cps[written++] = c;
        }
        cps.RemoveRange(written, cps.Count - written);
    }

    private static bool TryCompose(int first, int second, out int composite)
    {
        int l = first - LBase, v = second - VBase;
        if (l is >= 0 and < LCount && v is >= 0 and < VCount)
        {
            composite = SBase + (l * VCount + v) * TCount;
            return true;
        }
        int s = first - SBase, t = second - TBase;
        if (s is >= 0 and < SCount && s % TCount == 0 && t is > 0 and < TCount)
        {
            composite = first + t;
            return true;
        }
        return s_compositions.TryGetValue(PairKey(first, second), out composite);
    }

    private static long PairKey(int first, int second) => ((long)first << 21) | (uint)second;

    private static Dictionary<int, (int, int)> BuildDecompositions()
    {
        var t = UnicodeNfcData.Decompositions;
        var map = new Dictionary<int, (int, int)>(t.Length / 3);
        for (int i = 0; i < t.Length; i += 3) map.Add(t[i], (t[i + 1], t[i + 2]));
        return map;
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        var t = UnicodeNfcData.Compositions;
        var map = new Dictionary<long, int>(t.Length / 3);
        for (int i = 0; i < t.Length; i += 3) map.Add(PairKey(t[i], t[i + 1]), t[i + 2]);
        return map;
    }

    private static Dictionary<int, byte> BuildCombiningClasses()
    {
        var t = UnicodeNfcData.CombiningClassRanges;
        var map = new Dictionary<int, byte>();
        for (int i = 0; i < t.Length; i += 3)
            for (int cp = t[i]; cp <= t[i + 1]; cp++) map.Add(cp, (byte)t[i + 2]);
        return map;
    }

    private static int FirstUnstable()
    {
        int first = LBase;
        foreach (int cp in s_decompositions.Keys) first = Math.Min(first, cp);
        foreach (int cp in s_combiningClass.Keys) first = Math.Min(first, cp);
        var t = UnicodeNfcData.Compositions;
        for (int i = 1; i < t.Length; i += 3) first = Math.Min(first, t[i]);
        return first;
    }
}

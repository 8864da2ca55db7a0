using System.Globalization;
using System.Text.RegularExpressions;

namespace GpuIntLab.Core.Tokenization;

/// <summary>
/// A .NET regex run with code-point semantics, as HF tokenizers' Rust regex engines (Oniguruma,
/// fancy-regex) run their patterns over UTF-8 text. .NET matches UTF-16 code units, so a character
/// outside the BMP is two surrogates of category Cs: <c>\p{L}</c> misses an astral letter and
/// <c>[^\r\n\p{L}\p{N}]?</c> can take half an emoji. Here each astral character is replaced by one BMP
/// stand-in of the same Unicode general category before matching, and match positions are mapped back;
/// patterns that look at characters only through categories, <c>\s</c> and BMP literals (all the
/// tokenizer.json pre-tokenizer patterns) then match exactly as on code points.
/// </summary>
public sealed class CodePointRegex
{
    private readonly Regex _regex;

    public CodePointRegex(string pattern)
    {
        _regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
    }

    public string Pattern => _regex.ToString();

    /// <summary>(start, length) of each non-empty match in <paramref name="text"/>, in UTF-16 units of the original text.</summary>
    public List<(int Start, int Length)> Matches(string text)
    {
        var result = new List<(int, int)>();
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            for (var m = _regex.Match(text); m.Success; m = m.NextMatch())
                if (m.Length != 0) result.Add((m.Index, m.Length));
            return result;
        }
        // originalIndex[i]: where stand-in character i starts in the text (one extra entry for the end).
        var standIn = new char[text.Length];
        var originalIndex = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; i++)
        {
            originalIndex[n] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                standIn[n++] = StandIn(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1])));
                i++;
            }
            else
            {
                standIn[n++] = text[i];
            }
        }
        originalIndex[n] = text.Length;
        for (var m = _regex.Match(new string(standIn, 0, n)); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            int start = originalIndex[m.Index];
            result.Add((start, originalIndex[m.Index + m.Length] - start));
        }
        return result;
    }

    /// <summary>
    /// A BMP character of <paramref name="category"/>, not ASCII and not a character that tokenizer patterns
    /// name (letters of English contractions, \r, \n), so only its category can decide a match.
    /// </summary>
    public static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u0531',
        UnicodeCategory.LowercaseLetter => '\u0561',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u05D0',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.SpaceSeparator => '\u3000',
        UnicodeCategory.LineSeparator => '\u2028',
        UnicodeCategory.ParagraphSeparator => '\u2029',
        UnicodeCategory.Control => '\u0080',
        UnicodeCategory.Format => '\u200B',
        UnicodeCategory.Surrogate => '\uFFFD', // unreachable: a paired surrogate is never a code point's category
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00B7',
        UnicodeCategory.MathSymbol => '\u00D7',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u00B4',
        UnicodeCategory.OtherSymbol => '\u00A6',
        _ => '\u0378', // OtherNotAssigned: an unassigned BMP code point
    };
}

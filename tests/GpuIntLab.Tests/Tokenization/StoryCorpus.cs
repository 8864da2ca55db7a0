using System.Text;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>A deterministic generated English story corpus (the kind the project trains its small model on).</summary>
internal static class StoryCorpus
{
    private static readonly string[] Names = ["Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam"];
    private static readonly string[] Animals = ["cat", "dog", "bird", "fox", "rabbit", "bear", "frog", "duck", "mouse", "owl"];
    private static readonly string[] Adjectives = ["little", "big", "happy", "sad", "red", "blue", "shiny", "small", "brave", "kind", "sleepy", "funny"];
    private static readonly string[] Places = ["park", "garden", "forest", "house", "river", "school", "beach", "hill", "farm", "town"];
    private static readonly string[] Things = ["ball", "kite", "box", "tree", "flower", "cake", "book", "hat", "boat", "apple", "star", "toy"];
    private static readonly string[] Verbs = ["saw", "found", "liked", "wanted", "took", "gave", "made", "lost", "shared", "painted"];
    private static readonly string[] Feelings = ["happy", "sad", "scared", "proud", "tired", "excited", "surprised"];

    public static IEnumerable<string> Lines(int approxBytes, int seed = 2026)
    {
        var rng = new Random(seed);
        string Pick(string[] a) => a[rng.Next(a.Length)];
        long produced = 0;
        var sb = new StringBuilder();
        while (produced < approxBytes)
        {
            sb.Clear();
            string name = Pick(Names), friend = Pick(Names), animal = Pick(Animals);
            sb.Append($"Once upon a time, there was a {Pick(Adjectives)} {animal} named {name}. ");
            sb.Append($"{name} liked to play in the {Pick(Places)} with {friend}. ");
            int n = rng.Next(2, 6);
            for (int i = 0; i < n; i++)
            {
                switch (rng.Next(6))
                {
                    case 0: sb.Append($"One day, {name} {Pick(Verbs)} a {Pick(Adjectives)} {Pick(Things)}. "); break;
                    case 1: sb.Append($"\"Look, {friend}!\" said {name}. \"I have {rng.Next(2, 10)} {Pick(Things)}s!\" "); break;
                    case 2: sb.Append($"{friend} felt {Pick(Feelings)}, but {name} said, \"Don't worry, we can fix it.\" "); break;
                    case 3: sb.Append($"They walked to the {Pick(Places)} and {Pick(Verbs)} the {Pick(Things)} together. "); break;
                    case 4: sb.Append($"The {animal} was very {Pick(Feelings)} when it saw the {Pick(Adjectives)} {Pick(Things)}. "); break;
                    default: sb.Append($"It was {rng.Next(1, 13)} o'clock; the sun was {Pick(Adjectives)} and warm. "); break;
                }
            }
            sb.Append($"In the end, {name} and {friend} were {Pick(Feelings)} and went home.");
            string line = sb.ToString();
            produced += line.Length + 1;
            yield return line;
        }
    }
}

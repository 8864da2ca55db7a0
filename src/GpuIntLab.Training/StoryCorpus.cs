using System.Text;

namespace GpuIntLab.Training;

/// <summary>
/// A seeded generator of simple children's stories: a cast (a child or an animal with a name and a
/// pronoun, a friend, sometimes a parent), a place, an object, the weather, and one of several plots
/// (a lost thing, a new friend, sharing, being brave, making something, a trip, a storm, a race, a
/// surprise party), each told with varied sentences and dialogue. Stories keep their characters
/// consistent (names, pronouns, the object), so a small model has structure to learn beyond word
/// frequencies. No downloaded text: everything comes from the word lists below and the seed.
/// One story is one line.
/// </summary>
public static class StoryCorpus
{
    private sealed record Person(string Name, string Kind, bool Female)
    {
        public string He => Female ? "she" : "he";
        public string HeCap => Female ? "She" : "He";
        public string Him => Female ? "her" : "him";
        public string His => Female ? "her" : "his";
        public string HisCap => Female ? "Her" : "His";
    }

    private static readonly string[] GirlNames =
        ["Lily", "Mia", "Sue", "Anna", "Emma", "Lucy", "Sara", "Amy", "Zoe", "Kim", "Ella", "Rosa", "Maya", "Nina", "Jane", "Ruby", "Grace", "Molly", "Daisy", "Lola"];
    private static readonly string[] BoyNames =
        ["Tom", "Ben", "Max", "Sam", "Jack", "Leo", "Tim", "Joe", "Finn", "Alex", "Noah", "Jake", "Milo", "Oscar", "Theo", "Dan", "Luke", "Eli", "Owen", "Ravi"];
    private static readonly string[] Animals =
        ["bunny", "cat", "dog", "bear", "fox", "duck", "frog", "mouse", "bird", "owl", "pig", "lamb", "puppy", "kitten", "squirrel", "turtle", "lion", "horse", "cow", "hen"];
    private static readonly string[] AnimalNames =
        ["Pip", "Bop", "Fluffy", "Spot", "Coco", "Buddy", "Bella", "Rusty", "Sunny", "Nibbles", "Ginger", "Pepper", "Honey", "Bubbles", "Patch", "Whiskers", "Dot", "Snowy", "Benny", "Tilly"];
    private static readonly string[] Places =
        ["park", "forest", "beach", "garden", "farm", "town", "river", "hill", "school", "playground", "pond", "meadow", "zoo", "lake", "village", "woods", "field", "market"];
    private static readonly string[] Homes =
        ["small house", "big red house", "little blue house", "cozy hut", "tree house", "house by the sea", "white house", "tiny cottage"];
    private static readonly string[] Objects =
        ["ball", "kite", "hat", "shell", "book", "toy car", "teddy bear", "balloon", "doll", "drum", "boat", "ring", "blanket", "crayon", "box", "cup", "flower", "stick", "rock", "bell", "train", "spoon"];
    private static readonly string[] Colors =
        ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "black", "brown", "shiny", "golden"];
    private static readonly string[] Sizes = ["little", "big", "small", "tiny", "huge", "soft", "old", "new", "pretty", "funny"];
    private static readonly string[] Traits =
        ["kind", "happy", "curious", "shy", "brave", "silly", "gentle", "clever", "friendly", "quiet", "playful", "busy", "cheerful", "careful"];
    private static readonly string[] Foods =
        ["apple", "cookie", "cake", "sandwich", "banana", "pie", "carrot", "muffin", "pear", "bun", "candy", "orange"];
    private static readonly string[] Spots =
        ["under the bed", "behind the tree", "in the grass", "under a big leaf", "near the pond", "in the sand", "under the table", "behind a rock", "in a bush", "by the door", "in the box", "under the bench"];
    private static readonly string[] Games =
        ["tag", "hide and seek", "catch", "jump rope", "chase", "house", "ball", "pretend"];
    private static readonly string[] Weathers =
        ["sunny", "warm", "cold", "windy", "rainy", "cloudy", "bright", "snowy"];
    private static readonly string[] Feelings = ["happy", "glad", "proud", "excited", "calm", "joyful"];
    private static readonly string[] SadFeelings = ["sad", "upset", "worried", "scared", "lonely", "grumpy"];
    private static readonly string[] Fears =
        ["the dark", "the big dog", "thunder", "the tall slide", "the deep water", "the loud noise", "the big waves", "the old tree"];
    private static readonly string[] Makes =
        ["a sand castle", "a cake", "a snowman", "a paper boat", "a picture", "a tower of blocks", "a little kite", "a card", "a tent", "a hat"];
    private static readonly string[] Sees =
        ["a butterfly", "a big fish", "a rainbow", "a little bird", "a frog on a log", "a red car", "a tall tree", "a funny cloud", "a shiny stone", "a duck and her babies", "a kind old man", "a bee on a flower"];
    private static readonly string[] Parents = ["Mom", "Dad", "Grandma", "Grandpa"];
    private static readonly string[] Morals =
    [
        "It is good to share with friends.", "Friends help each other.", "Being kind makes everyone happy.",
        "It is good to be brave.", "If you try again, you can do it.", "It is fun to play together.",
        "Always say thank you.", "Be careful with your things.", "A good friend is the best gift.",
    ];

    /// <summary>Generates stories until about <paramref name="targetChars"/> characters, one story per string.</summary>
    public static List<string> Generate(ulong seed, long targetChars)
    {
        var rng = new SeededRandom(seed);
        var stories = new List<string>();
        long total = 0;
        while (total < targetChars)
        {
            string s = Story(rng);
            stories.Add(s);
            total += s.Length + 1;
        }
        return stories;
    }

    /// <summary>One story from the generator state.</summary>
    private static string Story(SeededRandom r)
    {
        var hero = NewPerson(r, null);
        var friend = NewPerson(r, hero.Name);
        var sb = new StringBuilder(600);
        Opening(r, sb, hero);
        switch (r.Next(9))
        {
            case 0: LostThing(r, sb, hero, friend); break;
            case 1: NewFriend(r, sb, hero, friend); break;
            case 2: Sharing(r, sb, hero, friend); break;
            case 3: Brave(r, sb, hero, friend); break;
            case 4: MakeSomething(r, sb, hero, friend); break;
            case 5: Trip(r, sb, hero); break;
            case 6: Storm(r, sb, hero, friend); break;
            case 7: Race(r, sb, hero, friend); break;
            default: Surprise(r, sb, hero, friend); break;
        }
        return sb.ToString().Trim();
    }

    private static Person NewPerson(SeededRandom r, string? notName)
    {
        while (true)
        {
            Person p = r.Next(3) switch
            {
                0 => new Person(r.Pick(GirlNames), "girl", true),
                1 => new Person(r.Pick(BoyNames), "boy", false),
                _ => new Person(r.Pick(AnimalNames), r.Pick(Animals), r.Chance(0.5)),
            };
            if (p.Name != notName) return p;
        }
    }

    private static string A(string word) => "aeiou".Contains(word[0]) ? "an " + word : "a " + word;

    private static void Say(StringBuilder sb, string text) => sb.Append(text).Append(' ');

    private static void Quote(SeededRandom r, StringBuilder sb, Person who, string words)
    {
        // Dialogue in a few shapes: "Words," said X. / X said, "Words." / "Words!" X shouted.
        string last = words[^1..];
        string body = words[..^1];
        switch (r.Next(4))
        {
            case 0: Say(sb, $"\"{body}{(last == "." ? "," : last)}\" said {who.Name}."); break;
            case 1: Say(sb, $"{who.Name} said, \"{words}\""); break;
            case 2: Say(sb, $"\"{words}\" {who.Name} {(last == "?" ? "asked" : last == "!" ? "shouted" : "said")}."); break;
            default: Say(sb, $"{who.Name} {(last == "?" ? "asked" : "said")}, \"{words}\""); break;
        }
    }

    private static void Opening(SeededRandom r, StringBuilder sb, Person p)
    {
        string trait = r.Pick(Traits);
        string who = $"{A(trait)} little {p.Kind} named {p.Name}";
        switch (r.Next(5))
        {
            case 0: Say(sb, $"Once upon a time, there was {who}."); break;
            case 1: Say(sb, $"Once upon a time, in a {r.Pick(Homes)}, there lived {who}."); break;
            case 2: Say(sb, $"There was once {who}."); break;
            case 3: Say(sb, $"One day, {who} woke up early."); break;
            default: Say(sb, $"{p.Name} was {A(trait)} {p.Kind} who lived in a {r.Pick(Homes)} near the {r.Pick(Places)}."); break;
        }
        if (r.Chance(0.6))
            Say(sb, r.Next(3) switch
            {
                0 => $"{p.HeCap} loved to play in the {r.Pick(Places)}.",
                1 => $"{p.HeCap} liked to play {r.Pick(Games)} with {p.His} friends.",
                _ => $"Every day, {p.He} went to the {r.Pick(Places)} to play.",
            });
    }

    private static void Ending(SeededRandom r, StringBuilder sb, Person hero, Person? friend)
    {
        switch (r.Next(5))
        {
            case 0: Say(sb, friend is null ? $"{hero.Name} was very {r.Pick(Feelings)}." : $"{hero.Name} and {friend.Name} were very {r.Pick(Feelings)}."); break;
            case 1: Say(sb, friend is null ? $"From that day on, {hero.Name} was always {r.Pick(Feelings)}." : $"From that day on, {hero.Name} and {friend.Name} were best friends."); break;
            case 2: Say(sb, $"{r.Pick(Morals)}"); break;
            case 3: Say(sb, $"That night, {hero.Name} went to bed with a big smile."); break;
            default: Say(sb, $"It was the best day ever."); break;
        }
        if (r.Chance(0.3)) Say(sb, "The end.");
    }

    private static void LostThing(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string obj = r.Pick(Objects);
        string desc = $"{r.Pick(Sizes)} {r.Pick(Colors)} {obj}";
        string place = r.Pick(Places);
        Say(sb, $"{hero.Name} had {A(desc)}. {hero.HeCap} loved {hero.His} {obj} very much.");
        Say(sb, $"One {r.Pick(Weathers)} day, {hero.Name} took the {obj} to the {place}.");
        Say(sb, r.Chance(0.5) ? $"{hero.HeCap} played with it all day." : $"{hero.HeCap} played {r.Pick(Games)} and forgot about the {obj}.");
        Say(sb, $"When it was time to go home, the {obj} was gone! {hero.Name} was very {r.Pick(SadFeelings)}.");
        Say(sb, $"{hero.HeCap} looked {r.Pick(Spots)}, but the {obj} was not there.");
        Say(sb, $"Then {hero.His} friend {friend.Name} the {friend.Kind} came by.");
        Quote(r, sb, friend, r.Chance(0.5) ? "Why are you sad?" : $"What is wrong, {hero.Name}?");
        Quote(r, sb, hero, $"I lost my {obj}.");
        Quote(r, sb, friend, "Do not worry. I will help you look.");
        string spot = r.Pick(Spots);
        Say(sb, $"They looked and looked. At last, {friend.Name} found the {obj} {spot}.");
        Quote(r, sb, hero, $"Thank you, {friend.Name}!");
        Say(sb, $"{hero.Name} hugged {hero.His} {obj} and smiled.");
        Ending(r, sb, hero, friend);
    }

    private static void NewFriend(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string place = r.Pick(Places);
        Say(sb, $"{hero.Name} did not have any friends, and {hero.He} felt {r.Pick(SadFeelings)}.");
        Say(sb, $"One day, {hero.He} went to the {place} and saw {A(friend.Kind)} sitting alone.");
        Quote(r, sb, hero, "Hello! What is your name?");
        Quote(r, sb, friend, $"My name is {friend.Name}.");
        Quote(r, sb, hero, r.Chance(0.5) ? "Do you want to play with me?" : $"Will you be my friend, {friend.Name}?");
        Say(sb, $"{friend.Name} smiled and said yes.");
        string game = r.Pick(Games);
        Say(sb, $"They played {game} in the {place} until the sun went down.");
        if (r.Chance(0.5)) Say(sb, $"{friend.Name} showed {hero.Name} {A(r.Pick(Colors) + " " + r.Pick(Objects))}, and {hero.Name} showed {friend.Name} how to jump very high.");
        Quote(r, sb, hero, "I am so happy I met you.");
        Ending(r, sb, hero, friend);
    }

    private static void Sharing(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string food = r.Pick(Foods);
        string parent = r.Pick(Parents);
        Say(sb, $"One day, {parent} gave {hero.Name} a big {food}.");
        Say(sb, $"{hero.Name} went to the {r.Pick(Places)} to eat it.");
        Say(sb, $"There, {hero.He} met {friend.Name} the {friend.Kind}. {friend.Name} looked {r.Pick(SadFeelings)} and hungry.");
        Quote(r, sb, friend, $"I have no food today.");
        Say(sb, $"{hero.Name} looked at the {food}. {hero.HeCap} wanted to eat it all.");
        Say(sb, $"But then {hero.He} thought about {friend.Name}.");
        Quote(r, sb, hero, $"Here, you can have half of my {food}.");
        Say(sb, $"{friend.Name} was very {r.Pick(Feelings)}.");
        Quote(r, sb, friend, $"Thank you, {hero.Name}! You are a good friend.");
        Say(sb, $"They ate the {food} together under a tree.");
        if (r.Chance(0.5)) Say(sb, $"The next day, {friend.Name} brought {A(r.Pick(Foods))} to share with {hero.Name}.");
        Ending(r, sb, hero, friend);
    }

    private static void Brave(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string fear = r.Pick(Fears);
        Say(sb, $"{hero.Name} was scared of {fear}.");
        Say(sb, $"Every time {hero.He} saw {fear}, {hero.He} ran to {hero.His} {r.Pick(Parents).ToLowerInvariant()}.");
        Say(sb, $"One day, {hero.Name} and {friend.Name} went to the {r.Pick(Places)}.");
        Say(sb, $"There was {fear} again! {hero.Name} wanted to run away.");
        Quote(r, sb, friend, "Do not be scared. I am here with you.");
        Say(sb, $"{friend.Name} held {hero.Name}'s hand.");
        Say(sb, $"{hero.Name} took a deep breath. {hero.HeCap} was brave and did not run.");
        Say(sb, r.Chance(0.5) ? $"It was not so bad after all." : $"Soon {hero.He} was not scared at all.");
        Quote(r, sb, hero, "I did it!");
        Say(sb, $"{hero.Name} felt very {r.Pick(Feelings)}.");
        Ending(r, sb, hero, friend);
    }

    private static void MakeSomething(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string thing = r.Pick(Makes);
        Say(sb, $"One {r.Pick(Weathers)} day, {hero.Name} wanted to make {thing}.");
        Say(sb, $"{hero.HeCap} worked very hard. But it fell down, and {hero.He} was {r.Pick(SadFeelings)}.");
        Quote(r, sb, hero, "I can not do it.");
        Say(sb, $"{friend.Name} the {friend.Kind} saw {hero.Name} and came to help.");
        Quote(r, sb, friend, "Let us try again together.");
        Say(sb, $"So they tried again. {friend.Name} held it, and {hero.Name} made it {r.Pick(Sizes)} and {r.Pick(Colors)}.");
        Say(sb, $"This time, it did not fall. It was the best {thing[(thing.IndexOf(' ') + 1)..]} in the whole {r.Pick(Places)}.");
        Quote(r, sb, hero, "We did it!");
        if (r.Chance(0.5)) Say(sb, $"They showed it to {r.Pick(Parents)}, who clapped and smiled.");
        Ending(r, sb, hero, friend);
    }

    private static void Trip(SeededRandom r, StringBuilder sb, Person hero)
    {
        string parent = r.Pick(Parents);
        string place = r.Pick(Places);
        Say(sb, $"It was a {r.Pick(Weathers)} morning. {parent} said, \"Today we will go to the {place}.\"");
        Say(sb, $"{hero.Name} was so {r.Pick(Feelings)}! {hero.HeCap} put on {hero.His} {r.Pick(Colors)} hat and ran to the door.");
        Say(sb, $"At the {place}, {hero.Name} saw {r.Pick(Sees)}.");
        Quote(r, sb, hero, $"Look, {parent}!");
        Say(sb, $"Then {hero.He} saw {r.Pick(Sees)}, and {r.Pick(Sees)}.");
        if (r.Chance(0.5)) Say(sb, $"They sat on the grass and ate {A(r.Pick(Foods))} and {A(r.Pick(Foods))}.");
        Say(sb, $"When the sun went down, they went home.");
        Quote(r, sb, hero, r.Chance(0.5) ? $"Can we go to the {place} again tomorrow?" : "That was so much fun!");
        Say(sb, $"{parent} smiled and said, \"Yes, we can.\"");
        Ending(r, sb, hero, null);
    }

    private static void Storm(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string place = r.Pick(Places);
        Say(sb, $"{hero.Name} and {friend.Name} were playing {r.Pick(Games)} in the {place}.");
        Say(sb, $"Suddenly, the sky turned dark. The wind began to blow, and the rain came down.");
        Quote(r, sb, friend, "Oh no! What do we do?");
        Quote(r, sb, hero, $"Let us go to my {r.Pick(Homes)}!");
        Say(sb, $"They ran as fast as they could. When they got inside, they were all wet.");
        Say(sb, $"{hero.HisCap} {r.Pick(Parents).ToLowerInvariant()} gave them a warm blanket and a cup of milk.");
        Say(sb, $"They sat by the window and watched the rain.");
        Say(sb, $"Soon the rain stopped, and they saw {A(r.Chance(0.5) ? "big rainbow" : "bright sun")} in the sky.");
        Quote(r, sb, friend, "Look, it is so pretty!");
        Ending(r, sb, hero, friend);
    }

    private static void Race(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string place = r.Pick(Places);
        Say(sb, $"One day, {friend.Name} said, \"Let us have a race to the {place}!\"");
        Say(sb, $"{hero.Name} said, \"Yes! I am very fast.\"");
        Say(sb, $"They ran and ran. {friend.Name} was in front, but then {friend.He} fell down and hurt {friend.His} knee.");
        Say(sb, $"{hero.Name} stopped running. {hero.HeCap} went back to help {friend.Name}.");
        Quote(r, sb, hero, "Are you okay?");
        Quote(r, sb, friend, "My knee hurts.");
        Say(sb, $"{hero.Name} helped {friend.Name} walk to the {place}. They got there together.");
        Quote(r, sb, friend, $"Thank you for helping me, {hero.Name}.");
        Say(sb, $"{hero.Name} did not win the race, but {hero.He} felt {r.Pick(Feelings)}.");
        Ending(r, sb, hero, friend);
    }

    private static void Surprise(SeededRandom r, StringBuilder sb, Person hero, Person friend)
    {
        string food = r.Pick(Foods);
        Say(sb, $"It was {friend.Name}'s birthday. {hero.Name} wanted to make a surprise.");
        Say(sb, $"{hero.HeCap} made a {r.Pick(Colors)} card and baked a {food} cake with {r.Pick(Parents)}.");
        Say(sb, $"Then {hero.He} asked all the friends to come to the {r.Pick(Places)}.");
        Say(sb, $"When {friend.Name} came, everyone shouted, \"Surprise!\"");
        Say(sb, $"{friend.Name} was so {r.Pick(Feelings)} that {friend.He} jumped up and down.");
        Quote(r, sb, friend, "This is the best birthday ever!");
        Say(sb, $"They ate the cake and played {r.Pick(Games)} all day.");
        if (r.Chance(0.5)) Say(sb, $"{friend.Name} gave {hero.Name} a big hug.");
        Ending(r, sb, hero, friend);
    }
}

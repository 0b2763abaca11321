/**
 * The guard's text when no --prompts file is given: plain English sentences of everyday, formal
 * and narrative registers, written for loraforge. A guard needs text the base model handles;
 * give your own domain's text with --prompts for a guard that matters to you.
 */
export const DEFAULT_PROMPTS: readonly string[] = [
  'The meeting was moved to Thursday because half of the team was travelling.',
  'She opened the window and listened to the rain falling on the roof.',
  'The committee will publish its report at the end of the year.',
  'I think we should leave early if we want to find a good seat.',
  'The river runs through the old town before it reaches the sea.',
  'He said that the train would be late, but nobody believed him.',
  'The government announced new measures to support small businesses.',
  'What time does the library close on Sundays?',
  'After dinner, they walked along the beach until the sun went down.',
  'The results of the study were shared with every school in the region.',
  'My brother works in a hospital and often comes home very late.',
  'It was the first time the two countries had signed such an agreement.',
  'The children played in the garden while their parents talked.',
  'Please send me the documents before the end of the week.',
  'The film tells the story of a family that moves to a new city.',
  'In the morning the streets were quiet and the shops were still closed.',
  'The new bridge will make it easier for people to cross the river.',
  'We talked about music, books and the places we wanted to visit.',
  'The price of bread has risen twice since the beginning of the year.',
  'He put the keys on the table and sat down without a word.',
];

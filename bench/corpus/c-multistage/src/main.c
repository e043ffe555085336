/* wordfreq: the ten most frequent words of standard input. */
#include <ctype.h>
#include <stdio.h>

#include "table.h"

int main(void) {
    struct table t = {0};
    char word[256];
    size_t n = 0;
    int c;
    while ((c = getchar()) != EOF) {
        if (isalpha(c) && n < sizeof word - 1) {
            word[n++] = (char)tolower(c);
        } else if (n > 0) {
            word[n] = '\0';
            table_add(&t, word);
            n = 0;
        }
    }
    if (n > 0) {
        word[n] = '\0';
        table_add(&t, word);
    }
    table_sort(&t);
    for (size_t i = 0; i < t.len && i < 10; i++)
        printf("%7zu %s\n", t.entries[i].count, t.entries[i].word);
    table_free(&t);
    return 0;
}

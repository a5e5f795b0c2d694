/* The CPU kernels of POPGym's clones: one call does, for every copy of a batch, what their
 * PyTorch paths do in dozens of small ops (a deck's shuffle, a board's ships, a CartPole step,
 * a Concentration turn). Each mirrors its PyTorch path's arithmetic; envs/native.py compiles and
 * loads this file and checks what it passes, and tests/test_envs_native.py holds each kernel to
 * its PyTorch path (the same random draws in, the same state and outputs out). Every kernel
 * checks the indices it would read or write through and returns 0, or -1 (having written
 * nothing) where one lies out of range: the caller raises. Row-major, every array contiguous.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The kinds of a shuffled deck, dealt in order: out[r, p] = kinds[deck[p]], where deck is a
 * Fisher-Yates shuffle of 0..cards-1 driven by u[r, :] (float64 uniforms in [0, 1)): for i from
 * cards - 1 down to 1, swap deck[i] with deck[floor(u[r, i] (i + 1))] (u[r, 0] is unused). A
 * uniform permutation per row, in O(cards), where sorting random keys is O(cards log cards).
 * kinds: [cards] int64, what the game reads of each card (its suit, rank or colour). */
int shuffle_kinds(int64_t rows, int64_t cards, const double *u, const int64_t *kinds,
                  int64_t *out) {
  if (rows < 0 || cards < 1) return -1;
  for (int64_t r = 0; r < rows; ++r) { /* shuffling the kinds themselves: the same deal */
    const double *ur = u + (size_t)r * cards;
    int64_t *o = out + (size_t)r * cards;
    memcpy(o, kinds, (size_t)cards * sizeof(int64_t));
    for (int64_t i = cards - 1; i > 0; --i) {
      int64_t j = (int64_t)(ur[i] * (double)(i + 1));
      if (j > i || j < 0) j = i; /* a u outside [0, 1): keep the card (never from rand) */
      const int64_t swap = o[i];
      o[i] = o[j];
      o[j] = swap;
    }
  }
  return 0;
}

/* Battleship's ships placed on one empty size x size board (uint8 [size * size], 1 where a
 * ship lies): ship s goes to the floor(u[s] F)-th of the F places it can still take (crossing
 * no ship placed before), in the order of Battleship.segments: along rows (row i, first column
 * j), then along columns (column j, first row i). Returns -1 where a ship finds no place. The
 * caller checks the sizes (1 <= ships[s] <= size <= 63). */
static int place_ships(int64_t size, int64_t nships, const int64_t *ships, const double *u,
                       uint8_t *board) {
  uint64_t row[64] = {0}, col[64] = {0}; /* the ship squares of each row and column, as bits */
  for (int64_t s = 0; s < nships; ++s) {
    const int64_t len = ships[s], starts = size - len + 1;
    const uint64_t first = starts == 64 ? ~(uint64_t)0 : (((uint64_t)1) << starts) - 1;
    /* bit j of free[axis][line]: the ship can lie from j to j + len - 1 along that line */
    uint64_t free[2][64];
    int64_t count = 0;
    for (int axis = 0; axis < 2; ++axis) {
      const uint64_t *lines = axis ? col : row;
      for (int64_t line = 0; line < size; ++line) {
        uint64_t taken = 0;
        for (int64_t q = 0; q < len; ++q) taken |= lines[line] >> q;
        free[axis][line] = ~taken & first;
        count += __builtin_popcountll(free[axis][line]);
      }
    }
    if (count == 0) return -1;
    int64_t pick = (int64_t)(u[s] * (double)count);
    if (pick >= count || pick < 0) pick = count - 1;
    for (int axis = 0; axis < 2; ++axis) /* the pick-th free place, in segments order */
      for (int64_t line = 0; line < size; ++line) {
        uint64_t bits = free[axis][line];
        const int64_t here = __builtin_popcountll(bits);
        if (pick >= here) {
          pick -= here;
          continue;
        }
        while (pick-- > 0) bits &= bits - 1; /* drop the lowest set bits before it */
        const int64_t j = __builtin_ctzll(bits);
        for (int64_t q = j; q < j + len; ++q) {
          const int64_t y = axis ? q : line, x = axis ? line : q;
          row[y] |= (uint64_t)1 << x;
          col[x] |= (uint64_t)1 << y;
        }
        goto placed;
      }
  placed:;
  }
  for (int64_t y = 0; y < size; ++y)
    for (int64_t x = 0; x < size; ++x) board[y * size + x] = (row[y] >> x) & 1;
  return 0;
}

static int ships_fit(int64_t size, int64_t nships, const int64_t *ships) {
  if (size < 1 || size > 63 || nships < 0) return 0;
  for (int64_t s = 0; s < nships; ++s)
    if (ships[s] < 1 || ships[s] > size) return 0;
  return 1;
}

/* Battleship's boards: rows boards (uint8 [rows, size * size]) with ships[nships] placed by
 * place_ships, board r from u[r, :] (float64 uniforms [rows, nships]). Returns -1 where a ship
 * is longer than the board or finds no place. */
int battleship_place(int64_t rows, int64_t size, int64_t nships, const int64_t *ships,
                     const double *u, uint8_t *boards) {
  if (rows < 0 || !ships_fit(size, nships, ships)) return -1;
  for (int64_t r = 0; r < rows; ++r)
    if (place_ships(size, nships, ships, u + (size_t)r * nships, boards + (size_t)r * size * size))
      return -1;
  return 0;
}

/* What a whole-step kernel returns: how many episodes ended, plus 2^32 for each of them that
 * was truncated (n < 2^31 copies). */
static int64_t ended_and_cut(int64_t ended, int64_t cut) { return ended + (cut << 32); }

/* The end of a step of copy b, as TensorEnv.step and _end_step do it: its episode's return
 * and length grow by the reward and 1; done = terminated or truncated; the episode's return and
 * length are copied out (every copy's: valid where done) and, where it ended and the env
 * resets (reset), zeroed for the next one. Returns done. */
static int end_of_step(int64_t b, float reward, int terminated, int truncated, int reset,
                       float *episode_return, int64_t *episode_length, float *return_out,
                       int64_t *length_out, uint8_t *done) {
  episode_return[b] += reward;
  episode_length[b] += 1;
  done[b] = terminated || truncated;
  return_out[b] = episode_return[b];
  length_out[b] = episode_length[b];
  if (done[b] && reset) {
    episode_return[b] = 0.0f;
    episode_length[b] = 0;
  }
  return done[b];
}

/* What a CartPole copy shows (its PyTorch path is _CartPole._observe): entries first and
 * first + 2 of its physics p[4] (x and theta: 0; the velocities: 1), x and theta where t is 0
 * (popgym's reset shows the positions), plus noise[2] clipped to [low, high] where noise is
 * given (the noisy task). */
static void cartpole_view(const double *p, int64_t t, int64_t first, const float *noise,
                          const float *bounds, float *obs) {
  const int64_t at = t == 0 ? 0 : first;
  for (int i = 0; i < 2; ++i) {
    float v = (float)p[at + 2 * i];
    if (noise) {
      v += noise[i];
      v = v < bounds[i] ? bounds[i] : v;         /* torch.maximum(obs + noise, low) */
      v = v > bounds[2 + i] ? bounds[2 + i] : v; /* torch.minimum(., high) */
    }
    obs[i] = v;
  }
}

/* One step of every copy of a CartPole task and all that follows it, in one call (its
 * PyTorch path: _CartPole._step, TensorEnv.step's bookkeeping, _Control._reset and _observe).
 * gymnasium's CartPole-v1 (Euler) in float64 and in gymnasium's order of operations, with
 * libm's cos and sin (popgym's, through Python's math): physics [n, 4] (x, x_dot, theta,
 * theta_dot) and t [n] updated in place; actions [n] in {0, 1} (1 pushes right); it pays
 * 1/length a step, ends where the cart or the pole leaves its bounds, truncates at length
 * steps. Then end_of_step; where an episode ended and reset is 1, the copy starts its next
 * one from the next 4 uniforms of the pool `uniform` (state -0.05 + 0.1 u), the reset copies
 * in copy order. With a noise pool (the noisy task: noise, obs_noise [n, 2], bounds [4] low
 * then high), every copy's next observation takes the next 2 draws of it, in copy order,
 * then each reset copy's first observation 2 more. Writes reward [n] float32, flags [3, n]
 * (terminated, truncated, done), return_out, length_out [n], obs [n, 2] (each copy's next
 * observation) and final_obs [n, 2] (an ended episode's last one). Pool positions *uniform_at,
 * *noise_at advance by what was taken. Returns ended_and_cut, or -1, having written nothing,
 * for an action out of range or a pool short of what n resets could take. */
int64_t cartpole_run(int64_t n, int64_t length, int64_t first, int64_t reset, double *physics,
                     int64_t *t, const int64_t *actions, float *episode_return,
                     int64_t *episode_length, const double *uniform, int64_t uniform_size,
                     int64_t *uniform_at, const float *noise, int64_t noise_size,
                     int64_t *noise_at, float *obs_noise, const float *bounds, float *reward,
                     uint8_t *flags, float *return_out, int64_t *length_out, float *obs,
                     float *final_obs) {
  const float pay = (float)(1.0 / (double)length);
  const double gravity = 9.8, masscart = 1.0, masspole = 0.1, half_length = 0.5;
  const double force_mag = 10.0, tau = 0.02;
  const double total_mass = masspole + masscart, polemass_length = masspole * half_length;
  const double theta_limit = 12 * 2 * 3.141592653589793 / 360, x_limit = 2.4; /* math.pi */
  if (length < 1 || (first != 0 && first != 1)) return -1;
  if (*uniform_at < 0 || *uniform_at + 4 * n > uniform_size) return -1;
  if (noise && (*noise_at < 0 || *noise_at + 4 * n > noise_size)) return -1;
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] != 0 && actions[b] != 1) return -1;
  uint8_t *terminated = flags, *truncated = flags + n, *done = flags + 2 * n;
  const double *u = uniform + *uniform_at;
  const float *z = noise ? noise + *noise_at : NULL, *z_reset = noise ? z + 2 * n : NULL;
  int64_t ended = 0, cut = 0;
  for (int64_t b = 0; b < n; ++b) {
    double *p = physics + (size_t)b * 4;
    const double x = p[0], x_dot = p[1], theta = p[2], theta_dot = p[3];
    const double force = (double)actions[b] * (2 * force_mag) - force_mag;
    const double c = cos(theta), s = sin(theta);
    const double temp = (force + polemass_length * (theta_dot * theta_dot) * s) / total_mass;
    const double theta_acc =
        (gravity * s - c * temp) /
        (half_length * (4.0 / 3.0 - masspole * (c * c) / total_mass));
    const double x_acc = temp - polemass_length * theta_acc * c / total_mass;
    p[0] = x + tau * x_dot;
    p[1] = x_dot + tau * x_acc;
    p[2] = theta + tau * theta_dot;
    p[3] = theta_dot + tau * theta_acc;
    terminated[b] = fabs(p[0]) > x_limit || fabs(p[2]) > theta_limit;
    t[b] += 1;
    truncated[b] = t[b] >= length;
    reward[b] = pay;
    float *nb = noise ? obs_noise + 2 * b : NULL;
    if (nb) {
      nb[0] = z[2 * b];
      nb[1] = z[2 * b + 1];
    }
    cartpole_view(p, t[b], first, nb, bounds, obs + 2 * b);
    if (!end_of_step(b, pay, terminated[b], truncated[b], reset, episode_return, episode_length,
                     return_out, length_out, done))
      continue;
    final_obs[2 * b] = obs[2 * b];
    final_obs[2 * b + 1] = obs[2 * b + 1];
    cut += truncated[b];
    if (reset) {
      for (int i = 0; i < 4; ++i) p[i] = -0.05 + 0.1 * u[4 * ended + i];
      t[b] = 0;
      if (nb) {
        nb[0] = z_reset[2 * ended];
        nb[1] = z_reset[2 * ended + 1];
      }
      cartpole_view(p, 0, first, nb, bounds, obs + 2 * b);
    }
    ++ended;
  }
  if (reset) *uniform_at += 4 * ended;
  if (noise) *noise_at += 2 * n + (reset ? 2 * ended : 0);
  return ended_and_cut(ended, cut);
}

/* One turn of Concentration for every copy (the PyTorch path is Concentration._step): flip
 * card actions[b] of cards; a turn's second card that matches its first (first[b] >= 0) stays
 * up with it. values, board: [n, cards] int64 (each card's value; what shows with no card
 * turned, facedown where no pair is up); pairs, first, t: [n]; turned: [n, 2] (the turn's first
 * card and this one, -1: none). Writes reward (float32), terminated, truncated [n]. */
int concentration_step(int64_t n, int64_t cards, int64_t facedown, int64_t length,
                       float success, float failure, const int64_t *values, int64_t *board,
                       int64_t *pairs, int64_t *first, int64_t *turned, int64_t *t,
                       const int64_t *actions, float *reward, uint8_t *terminated,
                       uint8_t *truncated) {
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] < 0 || actions[b] >= cards || first[b] < -1 || first[b] >= cards) return -1;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t *v = values + (size_t)b * cards;
    int64_t *bd = board + (size_t)b * cards;
    const int64_t a = actions[b], f0 = first[b], f = f0 < 0 ? 0 : f0;
    const int has_first = f0 >= 0, already_up = bd[a] != facedown;
    const int pair = has_first && !already_up && v[a] == v[f] && f0 != a;
    reward[b] = already_up ? failure * (1.0f + (float)has_first)
                           : (has_first ? (pair ? success : 2 * failure) : 0.0f);
    turned[2 * b] = f0;
    turned[2 * b + 1] = a;
    if (pair) {
      bd[a] = v[a];
      bd[f] = v[f];
    }
    pairs[b] += pair;
    terminated[b] = pair && pairs[b] == cards / 2;
    truncated[b] = t[b] >= length - 1;
    t[b] += 1;
    first[b] = !has_first && !already_up ? a : -1;
  }
  return 0;
}

/* What Concentration shows (its PyTorch path is Concentration._observe): obs [n, cards] =
 * board with the values of the cards turned at the last step (turned >= 0) face up. */
int concentration_observe(int64_t n, int64_t cards, const int64_t *values, const int64_t *board,
                          const int64_t *turned, int64_t *obs) {
  for (int64_t b = 0; b < 2 * n; ++b)
    if (turned[b] < -1 || turned[b] >= cards) return -1;
  memcpy(obs, board, (size_t)(n * cards) * sizeof(int64_t));
  for (int64_t b = 0; b < n; ++b)
    for (int k = 0; k < 2; ++k) {
      const int64_t c = turned[2 * b + k];
      if (c >= 0) obs[(size_t)b * cards + c] = values[(size_t)b * cards + c];
    }
  return 0;
}

/* One shot of Battleship for every copy and all that follows it, in one call (its PyTorch
 * path: Battleship._step, TensorEnv.step's bookkeeping, Battleship._reset and _observe): fire
 * at square (actions[b, 0], actions[b, 1]) of a size x size board; a hit of a ship square not
 * fired at before counts. board, guessed: uint8 [n, size * size]; hits, shown, t: [n] int64.
 * It pays hit_reward or miss_reward, ends when every one of the ships' squares is hit,
 * truncates at size * size shots. Then end_of_step; where an episode ended and reset is 1, the
 * copy gets a new board from the next nships uniforms of the pool `uniform` (place_ships), the
 * reset copies in copy order. Writes reward [n] float32, flags [3, n] (terminated, truncated,
 * done), return_out, length_out [n], obs [n] (what each copy shows next: 1 after a new hit),
 * final_obs [n] (an ended episode's last observation); *uniform_at advances by what was
 * taken. Returns ended_and_cut, or -1, having written nothing, for an action out of range,
 * ships that don't fit or a pool short of what n resets could take, and -2 where a new board
 * finds no place for a ship (then the steps are done and the boards of the copies before it
 * placed). */
int64_t battleship_run(int64_t n, int64_t size, int64_t nships, const int64_t *ships,
                       int64_t reset, float hit_reward, float miss_reward, uint8_t *board,
                       uint8_t *guessed, int64_t *hits, int64_t *shown, int64_t *t,
                       const int64_t *actions, float *episode_return, int64_t *episode_length,
                       const double *uniform, int64_t uniform_size, int64_t *uniform_at,
                       float *reward, uint8_t *flags, float *return_out, int64_t *length_out,
                       int64_t *obs, int64_t *final_obs) {
  if (!ships_fit(size, nships, ships)) return -1;
  if (*uniform_at < 0 || *uniform_at + nships * n > uniform_size) return -1;
  for (int64_t b = 0; b < 2 * n; ++b)
    if (actions[b] < 0 || actions[b] >= size) return -1;
  int64_t needed = 0;
  for (int64_t s = 0; s < nships; ++s) needed += ships[s];
  uint8_t *terminated = flags, *truncated = flags + n, *done = flags + 2 * n;
  const double *u = uniform + *uniform_at;
  const int64_t squares = size * size;
  int64_t ended = 0, cut = 0;
  int code = 0;
  for (int64_t b = 0; b < n; ++b) {
    const size_t at = (size_t)b * squares + (size_t)(actions[2 * b] * size + actions[2 * b + 1]);
    const int hit = board[at] && !guessed[at];
    guessed[at] = 1;
    hits[b] += hit;
    shown[b] = hit;
    t[b] += 1;
    reward[b] = hit ? hit_reward : miss_reward;
    terminated[b] = hits[b] == needed;
    truncated[b] = t[b] >= squares;
    obs[b] = shown[b];
    if (!end_of_step(b, reward[b], terminated[b], truncated[b], reset, episode_return,
                     episode_length, return_out, length_out, done))
      continue;
    final_obs[b] = obs[b];
    cut += truncated[b];
    if (reset && code == 0) {
      if (place_ships(size, nships, ships, u + nships * ended, board + (size_t)b * squares))
        code = -2;
      memset(guessed + (size_t)b * squares, 0, (size_t)squares);
      hits[b] = shown[b] = t[b] = obs[b] = 0;
    }
    ++ended;
  }
  if (reset) *uniform_at += nships * ended;
  return code ? code : ended_and_cut(ended, cut);
}

/* The card games (popgym_cards.py), one step of every copy with its episode's bookkeeping, for
 * the common step where no episode ends there needing nothing more of Python. game: 0
 * RepeatFirst, 1 RepeatPrevious, 2 Autoencode, 3 CountRecall, 4 HigherLower; cards C; k (how
 * far back RepeatPrevious asks); order, query: [n, C] int64, the kinds of the dealt cards (query:
 * CountRecall's query deck); counts: [n, distinct] int64 (CountRecall's tallies); t: [n].
 * Writes reward (float32: +-scale, 0 where the game pays nothing), terminated, truncated (0:
 * the card games never truncate), done [n], adds reward and 1 to episode_return and
 * episode_length, and writes the next observation of each copy into obs [n, width] (as the
 * game's _observe: width 2 for Autoencode's mode and card and CountRecall's two cards). Returns the number of copies whose
 * episode ended, or -1 for an action or a card out of range. Mirrors each game's _step and
 * _observe; card(j) reads position min(j, C - 1), as CardGame.card does. */
int64_t cardgame_step(int64_t game, int64_t n, int64_t cards, int64_t k, int64_t distinct,
                      int64_t num_actions, float scale, const int64_t *order,
                      const int64_t *query, int64_t *counts, int64_t *t, const int64_t *actions,
                      float *reward, uint8_t *terminated, uint8_t *truncated, uint8_t *done,
                      float *episode_return, int64_t *episode_length, int64_t *obs) {
  if (game < 0 || game > 4 || cards < 2 || k < 1) return -1;
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] < 0 || actions[b] >= num_actions || t[b] < 0) return -1;
  const int64_t last = cards - 1;
#define CARD(deck, b, j) (deck)[(size_t)(b) * cards + ((j) < last ? (j) : last)]
  if (game == 3) /* the tallies read and written: kinds < distinct */
    for (int64_t b = 0; b < n; ++b) {
      const int64_t q = CARD(query, b, t[b]), v = CARD(order, b, t[b] + 1);
      if (q < 0 || q >= distinct || v < 0 || v >= distinct) return -1;
    }
  int64_t ended = 0;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t a = actions[b], tb = t[b];
    float r = 0.0f;
    int term = 0;
    switch (game) {
      case 0: /* RepeatFirst */
        r = a == order[(size_t)b * cards] ? scale : -scale;
        term = tb + 1 == last;
        break;
      case 1: { /* RepeatPrevious */
        const int64_t back = tb + 1 - k < 0 ? 0 : tb + 1 - k;
        r = tb + 1 >= k ? (a == CARD(order, b, back) ? scale : -scale) : 0.0f;
        term = tb + 1 == last;
        break;
      }
      case 2: { /* Autoencode */
        int64_t recite = 2 * last - tb;
        recite = recite < 0 ? 0 : (recite > last ? last : recite);
        const int playing = tb >= last;
        r = playing ? (a == CARD(order, b, recite) ? scale : -scale) : 0.0f;
        term = playing && recite == 0;
        break;
      }
      case 3: { /* CountRecall */
        const int64_t asked = counts[(size_t)b * distinct + CARD(query, b, tb)];
        r = a == asked ? scale : -scale;
        counts[(size_t)b * distinct + CARD(order, b, tb + 1)] += 1;
        term = tb + 1 == last;
        break;
      }
      default: { /* HigherLower */
        const int64_t now = CARD(order, b, tb), after = CARD(order, b, tb + 1);
        r = after == now ? 0.0f : (((after > now) == (a == 0)) ? scale : -scale);
        term = tb + 1 >= last;
        break;
      }
    }
    t[b] = tb + 1;
    reward[b] = r;
    terminated[b] = (uint8_t)term;
    truncated[b] = 0;
    done[b] = (uint8_t)term;
    ended += term;
    episode_return[b] += r;
    episode_length[b] += 1;
    const int64_t now = tb + 1;
    if (game == 2) {
      obs[2 * b] = now < last;
      obs[2 * b + 1] = now <= last ? CARD(order, b, now) : 0;
    } else if (game == 3) {
      obs[2 * b] = CARD(order, b, now);
      obs[2 * b + 1] = CARD(query, b, now);
    } else {
      obs[b] = CARD(order, b, now);
    }
  }
#undef CARD
  return ended;
}

/* The bookkeeping of a step (TensorEnv.step's): episode_return += reward, episode_length += 1,
 * done = terminated | truncated, for n copies (bool arrays as uint8). Returns how many
 * episodes ended. */
int64_t step_bookkeeping(int64_t n, const float *reward, const uint8_t *terminated,
                         const uint8_t *truncated, float *episode_return,
                         int64_t *episode_length, uint8_t *done) {
  int64_t ended = 0;
  for (int64_t b = 0; b < n; ++b) {
    episode_return[b] += reward[b];
    episode_length[b] += 1;
    done[b] = terminated[b] | truncated[b];
    ended += done[b];
  }
  return ended;
}

/* One pull of MultiarmedBandit for every copy (the PyTorch path is MultiarmedBandit._step):
 * arm actions[b] pays where the episode's t-th float64 draw falls below its float32
 * probability. arms: [n, narms] float32; draws: [n, length] float64; t, shown: [n] int64.
 * Writes reward (float32, +-1/length), truncated (the episode's last pull). */
int bandit_step(int64_t n, int64_t narms, int64_t length, const float *arms, const double *draws,
                int64_t *t, int64_t *shown, const int64_t *actions, float *reward,
                uint8_t *truncated) {
  if (length < 1) return -1;
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] < 0 || actions[b] >= narms || t[b] < 0) return -1;
  const float pay = (float)(1.0 / (double)length);
  for (int64_t b = 0; b < n; ++b) {
    const int64_t tb = t[b] < length - 1 ? t[b] : length - 1;
    const int paid = draws[(size_t)b * length + tb] < (double)arms[(size_t)b * narms + actions[b]];
    shown[b] = paid;
    reward[b] = paid ? pay : -pay;
    truncated[b] = t[b] >= length - 1;
    t[b] += 1;
  }
  return 0;
}

/* MineSweeper's boards for rows copies: `mines` mines on distinct squares of height x width,
 * the squares of the first `mines` draws of a Fisher-Yates shuffle driven by u [rows, squares]
 * (float64 uniforms; the shuffle runs from the last square down, as shuffle_kinds's), and each
 * square's count of mines in its 3 x 3 block (itself included). mines_out: uint8 [rows,
 * squares]; counts: int64 [rows, squares]. */
int minesweeper_lay(int64_t rows, int64_t height, int64_t width, int64_t mines, const double *u,
                    uint8_t *mines_out, int64_t *counts) {
  const int64_t squares = height * width;
  if (rows < 0 || height < 1 || width < 1 || squares < 1 || squares > 4096 || mines < 0 ||
      mines > squares)
    return -1;
  int64_t deck[4096];
  for (int64_t r = 0; r < rows; ++r) {
    const double *ur = u + (size_t)r * squares;
    uint8_t *m = mines_out + (size_t)r * squares;
    int64_t *c = counts + (size_t)r * squares;
    for (int64_t p = 0; p < squares; ++p) deck[p] = p;
    for (int64_t i = squares - 1; i >= squares - mines && i > 0; --i) { /* the last `mines` */
      int64_t j = (int64_t)(ur[i] * (double)(i + 1));
      if (j > i || j < 0) j = i;
      const int64_t swap = deck[i];
      deck[i] = deck[j];
      deck[j] = swap;
    }
    memset(m, 0, (size_t)squares);
    for (int64_t p = squares - mines; p < squares; ++p) m[deck[p]] = 1;
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        int64_t sum = 0;
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < height && xx >= 0 && xx < width) sum += m[yy * width + xx];
          }
        c[y * width + x] = sum;
      }
  }
  return 0;
}

/* One square uncovered in every copy's MineSweeper (the PyTorch path is MineSweeper._step):
 * mines, viewed: uint8 [n, squares]; counts: int64 [n, squares]; t, shown: [n]. Writes reward
 * (float32: failure on a mine, repeat on a square uncovered before, success else), terminated
 * (a mine, or every clear square uncovered), truncated (length squares uncovered, not
 * terminated). */
int minesweeper_step(int64_t n, int64_t height, int64_t width, int64_t length, float success,
                     float failure, float repeat, const uint8_t *mines, uint8_t *viewed,
                     const int64_t *counts, int64_t *t, int64_t *shown, const int64_t *actions,
                     float *reward, uint8_t *terminated, uint8_t *truncated) {
  const int64_t squares = height * width;
  for (int64_t b = 0; b < n; ++b)
    if (actions[2 * b] < 0 || actions[2 * b] >= height || actions[2 * b + 1] < 0 ||
        actions[2 * b + 1] >= width)
      return -1;
  for (int64_t b = 0; b < n; ++b) {
    const size_t row = (size_t)b * squares;
    const int64_t cell = actions[2 * b] * width + actions[2 * b + 1];
    const int mine = mines[row + cell], seen = viewed[row + cell];
    reward[b] = mine ? failure : (seen ? repeat : success);
    viewed[row + cell] = seen || !mine;
    t[b] += 1;
    int all = 1;
    for (int64_t q = 0; q < squares; ++q) all &= viewed[row + q] | mines[row + q];
    terminated[b] = mine || all;
    truncated[b] = t[b] == length && !terminated[b];
    shown[b] = counts[row + cell];
  }
  return 0;
}

/* Where episodes ended (done [n]): their returns and lengths copied out (return_out,
 * length_out: every copy's, as TensorEnv.step's statistics) and zeroed for the next episode.
 * Returns how many of the ended episodes were truncated. */
int64_t episode_ends(int64_t n, const uint8_t *done, const uint8_t *truncated,
                     float *episode_return, int64_t *episode_length, float *return_out,
                     int64_t *length_out) {
  int64_t cut = 0;
  for (int64_t b = 0; b < n; ++b) {
    return_out[b] = episode_return[b];
    length_out[b] = episode_length[b];
    if (done[b]) {
      episode_return[b] = 0.0f;
      episode_length[b] = 0;
      cut += truncated[b];
    }
  }
  return cut;
}

/* gymnasium's Pendulum-v1, one step of every copy as PositionOnlyPendulum._step does it (the
 * same float32 and float64 operations in the same order): physics [n, 2] (theta, theta_dot)
 * float64 updated in place, given the sine of each theta [n] (PyTorch's); actions [n] float32
 * torques (clipped to [-2, 2]); t [n] counts the step. Writes reward (float32, popgym's
 * rescaling: (r + half) / half / length) and truncated (length steps). */
int pendulum_step(int64_t n, int64_t length, double half, double *physics, const double *sines,
                  const float *actions, int64_t *t, float *reward, uint8_t *truncated) {
  const double pi = 3.141592653589793, max_speed = 8.0, dt = 0.05;
  if (length < 1) return -1;
  for (int64_t b = 0; b < n; ++b) {
    double *p = physics + (size_t)b * 2;
    const double theta = p[0], theta_dot = p[1];
    float u = actions[b];
    u = u < -2.0f ? -2.0f : (u > 2.0f ? 2.0f : u);
    double angle = fmod(theta + pi, 2 * pi); /* Python's and PyTorch's remainder */
    if (angle < 0) angle += 2 * pi;
    angle -= pi;
    const double costs = angle * angle + 0.1 * (theta_dot * theta_dot) + (double)(0.001f * (u * u));
    const double push = (double)(3.0f * u);
    double new_dot = theta_dot + (15.0 * sines[b] + push) * dt;
    new_dot = new_dot < -max_speed ? -max_speed : (new_dot > max_speed ? max_speed : new_dot);
    p[0] = theta + new_dot * dt;
    p[1] = new_dot;
    reward[b] = (float)((-costs + half) / half / (double)length);
    t[b] += 1;
    truncated[b] = t[b] >= length;
  }
  return 0;
}

/* ---- Passive and Active Match (envs/match.py; its PyTorch path is MatchEnv._torch_step) ----
 * The grid tasks' canvas: grid [n, R, C] uint8 cell codes (FLOOR 0, WALL 1, APPLE 2, COLOUR + k
 * for colour k), padded with walls by the view radius; pos [n, 2] int64 (row, col). A new
 * episode's deal (its random draws) stays in PyTorch (MatchEnv._reset); a step and the phase
 * changes it leads to are deterministic given the state, and run here. */
enum { M_FLOOR = 0, M_WALL = 1, M_APPLE = 2, M_COLOUR = 3 };
enum { M_CUE = 0, M_DISTRACTOR = 1, M_CHOICE = 2 };
#define M_RADIUS 2
#define M_VIEW 5
#define M_ROOM_CELLS 49

/* Whether an agent at p [2] (row, col) is away from a rows x cols canvas's edge by the view
 * radius: its view, and every cell one move away, lie on the canvas. */
static int in_view_range(int64_t rows, int64_t cols, const int64_t *p) {
  return p[0] >= M_RADIUS && p[0] < rows - M_RADIUS && p[1] >= M_RADIUS && p[1] < cols - M_RADIUS;
}

/* The constants of a Match env (MatchEnv's options, room templates and choice layout). */
typedef struct {
  int64_t rows, cols, colours, apples, active, delay, cue_steps, choice_steps, respawn;
  float apple_reward, match_reward;
  const uint8_t *apple_room, *choice_room; /* [R, C] templates */
  const int64_t *interior;                 /* [49, 2] the 7x7 rooms' floor cells */
  const int64_t *squares, *choice_start;   /* [k, 2] the choice room's squares, [2] the start */
} MatchSpec;

/* Whether copy b's state can be stepped without an index out of range: the agent away from
 * the canvas's edge by the view radius, phase and draws within their ranges. */
static int match_valid(const MatchSpec *s, int64_t b, const int64_t *pos, const int64_t *phase,
                       const int64_t *apples, const int64_t *start, const int64_t *order) {
  if (!in_view_range(s->rows, s->cols, pos + 2 * b)) return 0;
  if (phase[b] < M_CUE || phase[b] > M_CHOICE) return 0;
  if (start[b] < 0 || start[b] >= M_ROOM_CELLS) return 0;
  for (int64_t a = 0; a < s->apples; ++a)
    if (apples[b * s->apples + a] < 0 || apples[b * s->apples + a] >= M_ROOM_CELLS) return 0;
  for (int64_t j = 0; j < s->colours; ++j)
    if (order[b * s->colours + j] < 0 || order[b * s->colours + j] >= s->colours) return 0;
  return 1;
}

/* MatchEnv._setup_distractor for copy b: the apple room, its apples, the agent's start. */
static void match_distractor(const MatchSpec *s, int64_t b, uint8_t *grid, int64_t *timer,
                             int64_t *pos, int64_t *phase, int64_t *t_phase,
                             const int64_t *apples, const int64_t *start) {
  const size_t cells = (size_t)s->rows * s->cols;
  phase[b] = M_DISTRACTOR;
  t_phase[b] = 0;
  memcpy(grid + b * cells, s->apple_room, cells);
  memset(timer + b * cells, 0, cells * sizeof(int64_t));
  for (int64_t a = 0; a < s->apples; ++a) {
    const int64_t *cell = s->interior + 2 * apples[b * s->apples + a];
    grid[b * cells + cell[0] * s->cols + cell[1]] = M_APPLE;
  }
  pos[2 * b] = s->interior[2 * start[b]];
  pos[2 * b + 1] = s->interior[2 * start[b] + 1];
}

/* MatchEnv._setup_choice for copy b: the choice room with the squares in the episode's
 * order at their cells, the agent at its start (the layout is MatchEnv's). */
static void match_choice(const MatchSpec *s, int64_t b, uint8_t *grid, int64_t *timer,
                         int64_t *pos, int64_t *phase, int64_t *t_phase, const int64_t *order) {
  const size_t cells = (size_t)s->rows * s->cols;
  phase[b] = M_CHOICE;
  t_phase[b] = 0;
  memcpy(grid + b * cells, s->choice_room, cells);
  memset(timer + b * cells, 0, cells * sizeof(int64_t));
  for (int64_t j = 0; j < s->colours; ++j)
    grid[b * cells + s->squares[2 * j] * s->cols + s->squares[2 * j + 1]] =
        (uint8_t)(M_COLOUR + order[b * s->colours + j]);
  pos[2 * b] = s->choice_start[0];
  pos[2 * b + 1] = s->choice_start[1];
}

/* One step of every copy of a Match env, as MatchEnv._torch_step: the move (walls and squares
 * block), apples eaten and their respawn timers, the choice and its statistics, the phase
 * clocks and the phase changes they lead to, and (Active Match) whether the cue came into
 * view. Float arithmetic in PyTorch's order, so both paths agree bit for bit.
 * Per copy: grid [R, C] uint8; timer [R, C] int64; pos, cue_cell [2] int64; phase, t_phase,
 * cue, start (the distractor start), cue_position [1] int64; apples [A] and order [k] int64;
 * stats: float32 arrays success, choice_reward, apple_reward, cue_seen, success_seen,
 * success_unseen; success_at: k pointers to float32 [n] arrays. Writes reward [n] float32 and
 * terminated [n] uint8. Returns 0, or -1 (writing nothing) for an action outside 0..3 or a
 * state that would index out of range. */
int match_step(int64_t n, int64_t rows, int64_t cols, int64_t colours, int64_t napples,
               int64_t active, int64_t delay, int64_t cue_steps, int64_t choice_steps,
               int64_t respawn, float apple_reward, float match_reward,
               const uint8_t *apple_room, const uint8_t *choice_room, const int64_t *interior,
               const int64_t *squares, const int64_t *choice_start, uint8_t *grid, int64_t *timer, int64_t *pos, int64_t *phase, int64_t *t_phase,
               const int64_t *cue, const int64_t *cue_cell, const int64_t *cue_position,
               const int64_t *apples, const int64_t *start, const int64_t *order,
               float *success, float *choice_reward, float *apple_total, float *cue_seen,
               float *success_seen, float *success_unseen, float *const *success_at,
               const int64_t *actions, float *reward, uint8_t *terminated) {
  static const int64_t moves[4][2] = {{-1, 0}, {0, 1}, {1, 0}, {0, -1}};
  const MatchSpec s = {rows, cols, colours, napples, active, delay, cue_steps, choice_steps,
                       respawn, apple_reward, match_reward, apple_room, choice_room, interior,
                       squares, choice_start};
  if (colours < 1 || napples < 0 || napples >= M_ROOM_CELLS) return -1;
  /* every cell the step writes or moves the agent to lies in the view's range of the canvas */
  for (int64_t i = 0; i < M_ROOM_CELLS; ++i)
    if (!in_view_range(rows, cols, interior + 2 * i)) return -1;
  for (int64_t j = 0; j < colours; ++j)
    if (!in_view_range(rows, cols, squares + 2 * j)) return -1;
  if (!in_view_range(rows, cols, choice_start)) return -1;
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] < 0 || actions[b] > 3 || !match_valid(&s, b, pos, phase, apples, start, order))
      return -1;
  const size_t cells = (size_t)rows * cols;
  for (int64_t b = 0; b < n; ++b) {
    uint8_t *g = grid + b * cells;
    int64_t *tm = timer + b * cells;
    const int64_t p = phase[b];
    const int64_t *move = moves[actions[b]];
    const int64_t tr = pos[2 * b] + move[0], tc = pos[2 * b + 1] + move[1];
    const uint8_t cell = g[tr * cols + tc];
    /* apples */
    const int eat = p == M_DISTRACTOR && cell == M_APPLE;
    float r = 0.0f + (float)eat * apple_reward;
    apple_total[b] += (float)eat * apple_reward;
    if (eat) {
      g[tr * cols + tc] = M_FLOOR;
      tm[tr * cols + tc] = respawn;
    }
    /* the choice */
    const int chose = p == M_CHOICE && cell >= M_COLOUR;
    const int correct = chose && (int64_t)cell - M_COLOUR == cue[b];
    r += (float)correct * match_reward;
    choice_reward[b] += (float)correct * match_reward;
    if (chose) {
      success[b] = (float)correct;
      if (cue_position[b] >= 0 && cue_position[b] < colours)
        success_at[cue_position[b]][b] = (float)correct;
      if (isfinite(success_seen[b])) success_seen[b] = (float)correct;
      if (isfinite(success_unseen[b])) success_unseen[b] = (float)correct;
    }
    reward[b] = r;
    /* the move: floor and apples are free */
    if (cell == M_FLOOR || cell == M_APPLE) {
      pos[2 * b] = tr;
      pos[2 * b + 1] = tc;
    }
    /* respawn: an apple due grows back unless the agent stands on its cell */
    const int64_t here = pos[2 * b] * cols + pos[2 * b + 1];
    for (size_t i = 0; i < cells; ++i) {
      if (tm[i] == 1) {
        if ((int64_t)i == here)
          tm[i] = 2;
        else
          g[i] = M_APPLE;
      }
      tm[i] = tm[i] - 1 > 0 ? tm[i] - 1 : 0;
    }
    /* the phase clocks */
    const int64_t t = ++t_phase[b];
    terminated[b] = chose || (p == M_CHOICE && t >= choice_steps);
    if (p == M_CUE && t >= cue_steps) {
      if (delay > 0)
        match_distractor(&s, b, grid, timer, pos, phase, t_phase, apples, start);
      else
        match_choice(&s, b, grid, timer, pos, phase, t_phase, order);
    } else if (p == M_DISTRACTOR && t >= delay && delay > 0) {
      match_choice(&s, b, grid, timer, pos, phase, t_phase, order);
    }
    /* Active Match: the cue is seen when its cell is in the next view, still in the cue phase */
    if (active && phase[b] == M_CUE && cue_seen[b] == 0.0f) {
      const int64_t dr = pos[2 * b] - cue_cell[2 * b], dc = pos[2 * b + 1] - cue_cell[2 * b + 1];
      const int64_t far = (dr < 0 ? -dr : dr) > (dc < 0 ? -dc : dc) ? (dr < 0 ? -dr : dr)
                                                                     : (dc < 0 ? -dc : dc);
      if (far <= M_RADIUS) {
        cue_seen[b] = 1.0f;
        success_seen[b] = 0.0f;
        success_unseen[b] = NAN;
      }
    }
  }
  return 0;
}

/* The agent-centred view of every copy of a grid task (GridEnv._observe): image [n, 5, 5,
 * channels] uint8, image[b, i, j, ch] = 1 where cell (pos - 2 + i, pos - 2 + j) holds code
 * ch. Returns 0, or -1 (writing nothing) where a view would leave the canvas. */
int grid_observe(int64_t n, int64_t rows, int64_t cols, int64_t channels, const uint8_t *grid,
                 const int64_t *pos, uint8_t *image) {
  for (int64_t b = 0; b < n; ++b)
    if (!in_view_range(rows, cols, pos + 2 * b)) return -1;
  memset(image, 0, (size_t)n * M_VIEW * M_VIEW * channels);
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t *g = grid + (size_t)b * rows * cols;
    uint8_t *out = image + (size_t)b * M_VIEW * M_VIEW * channels;
    for (int64_t i = 0; i < M_VIEW; ++i)
      for (int64_t j = 0; j < M_VIEW; ++j) {
        const uint8_t code = g[(pos[2 * b] - M_RADIUS + i) * cols + pos[2 * b + 1] - M_RADIUS + j];
        if (code < channels) out[(i * M_VIEW + j) * channels + code] = 1;
      }
  }
  return 0;
}

/* New episodes in copies idx[0..m) of a Match env, from their draws (MatchEnv._deal; its
 * PyTorch path is MatchEnv._torch_deal): order [m, 49] a permutation of the 7x7 room's cells
 * (apples on the first napples, the distractor start on the next), colours [m, k] the choice
 * room's order, cue [m] the cue's colour, which [m] its cell in cue_cells [ncells, 2], start [m]
 * the agent's cell in starts [nstarts, 2]. The statistics start at 0, cue_seen at `seen`
 * (Passive Match: 1) with success_seen / success_unseen 0 or NaN accordingly, success_at_p 0
 * at the cue's position p in the choice room and NaN elsewhere. Other arrays as match_step's.
 * Returns 0, or -1 (writing nothing) for an index out of range. */
int match_deal(int64_t n, int64_t rows, int64_t cols, int64_t colours, int64_t napples,
               int64_t ncells, int64_t nstarts, float seen, const uint8_t *cue_room,
               const int64_t *cue_cells, const int64_t *starts, int64_t m, const int64_t *idx,
               const int64_t *order, const int64_t *colour_order, const int64_t *cue_draw,
               const int64_t *which, const int64_t *start_draw, uint8_t *grid, int64_t *timer,
               int64_t *pos, int64_t *phase, int64_t *t_phase, int64_t *cue, int64_t *cue_cell,
               int64_t *cue_position, int64_t *apples, int64_t *start, int64_t *order_out,
               float *success, float *choice_reward, float *apple_total, float *cue_seen,
               float *success_seen, float *success_unseen, float *const *success_at) {
  if (napples < 0 || napples >= M_ROOM_CELLS || colours < 1) return -1;
  for (int64_t i = 0; i < ncells; ++i)
    if (cue_cells[2 * i] < 0 || cue_cells[2 * i] >= rows || cue_cells[2 * i + 1] < 0 ||
        cue_cells[2 * i + 1] >= cols)
      return -1;
  for (int64_t i = 0; i < nstarts; ++i)
    if (starts[2 * i] < M_RADIUS || starts[2 * i] >= rows - M_RADIUS ||
        starts[2 * i + 1] < M_RADIUS || starts[2 * i + 1] >= cols - M_RADIUS)
      return -1;
  for (int64_t j = 0; j < m; ++j) {
    if (idx[j] < 0 || idx[j] >= n || which[j] < 0 || which[j] >= ncells || start_draw[j] < 0 ||
        start_draw[j] >= nstarts || cue_draw[j] < 0 || cue_draw[j] >= colours)
      return -1;
    for (int64_t i = 0; i <= napples; ++i)
      if (order[j * M_ROOM_CELLS + i] < 0 || order[j * M_ROOM_CELLS + i] >= M_ROOM_CELLS)
        return -1;
    for (int64_t i = 0; i < colours; ++i)
      if (colour_order[j * colours + i] < 0 || colour_order[j * colours + i] >= colours)
        return -1;
  }
  const size_t cells = (size_t)rows * cols;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t b = idx[j];
    success[b] = choice_reward[b] = apple_total[b] = 0.0f;
    for (int64_t a = 0; a < napples; ++a) apples[b * napples + a] = order[j * M_ROOM_CELLS + a];
    start[b] = order[j * M_ROOM_CELLS + napples];
    int64_t at = 0; /* the first position of the cue's colour in the choice room */
    for (int64_t i = colours - 1; i >= 0; --i) {
      order_out[b * colours + i] = colour_order[j * colours + i];
      if (colour_order[j * colours + i] == cue_draw[j]) at = i;
    }
    phase[b] = M_CUE;
    t_phase[b] = 0;
    memcpy(grid + b * cells, cue_room, cells);
    memset(timer + b * cells, 0, cells * sizeof(int64_t));
    cue[b] = cue_draw[j];
    const int64_t *cell = cue_cells + 2 * which[j], *from = starts + 2 * start_draw[j];
    pos[2 * b] = from[0];
    pos[2 * b + 1] = from[1];
    grid[b * cells + cell[0] * cols + cell[1]] = (uint8_t)(M_COLOUR + cue_draw[j]);
    cue_cell[2 * b] = cell[0];
    cue_cell[2 * b + 1] = cell[1];
    cue_seen[b] = seen;
    success_seen[b] = seen != 0.0f ? 0.0f : NAN;
    success_unseen[b] = seen != 0.0f ? NAN : 0.0f;
    cue_position[b] = at;
    for (int64_t p = 0; p < colours; ++p) success_at[p][b] = p == at ? 0.0f : NAN;
  }
  return 0;
}

/* ---- MemoryS{7,...,17} (envs/memory.py; its PyTorch path is MemoryEnv._torch_step) ----
 * A copy's world is [size^2 + 3] packed cell codes (object + 256 colour + 65536 state),
 * x-major; pos [2] int64 (x, y), dir in 0..3. */
#define MEM_EMPTY 1
#define MEM_VIEW 7

/* One step of every copy of a Memory env, as MemoryEnv._torch_step: turn left (0) or right
 * (1), move forward (2) onto an empty cell; the episode ends at the cell beside the object
 * matching the start room's (success_pos: reward 1 - 0.9 step_count / max_steps, in float32
 * as PyTorch computes it) or beside the other one (failure_pos), and is truncated at
 * max_steps. Writes reward [n] float32, terminated and truncated [n] uint8, success [n] float32.
 * Returns 0, or -1 (writing nothing) for an action outside 0..6 or a state out of range. */
int memory_step(int64_t n, int64_t size, int64_t max_steps, const int32_t *world, int64_t *pos,
                int64_t *dir, int64_t *step_count, const int64_t *success_pos,
                const int64_t *failure_pos, float *success, const int64_t *actions,
                float *reward, uint8_t *terminated, uint8_t *truncated) {
  static const int64_t vec[4][2] = {{1, 0}, {0, 1}, {-1, 0}, {0, -1}};
  const int64_t stride = size * size + 3;
  for (int64_t b = 0; b < n; ++b)
    if (actions[b] < 0 || actions[b] > 6 || dir[b] < 0 || dir[b] > 3 || pos[2 * b] < 1 ||
        pos[2 * b] > size - 2 || pos[2 * b + 1] < 1 || pos[2 * b + 1] > size - 2)
      return -1;
  for (int64_t b = 0; b < n; ++b) {
    if (actions[b] == 0) dir[b] = (dir[b] + 3) & 3;
    if (actions[b] == 1) dir[b] = (dir[b] + 1) & 3;
    const int64_t fx = pos[2 * b] + vec[dir[b]][0], fy = pos[2 * b + 1] + vec[dir[b]][1];
    if (actions[b] == 2 && (world[b * stride + fx * size + fy] & 255) == MEM_EMPTY) {
      pos[2 * b] = fx;
      pos[2 * b + 1] = fy;
    }
    step_count[b] += 1;
    const int hit = pos[2 * b] == success_pos[2 * b] && pos[2 * b + 1] == success_pos[2 * b + 1];
    const int miss = pos[2 * b] == failure_pos[2 * b] && pos[2 * b + 1] == failure_pos[2 * b + 1];
    const float frac = (float)step_count[b] / (float)max_steps;
    reward[b] = hit ? 1.0f - 0.9f * frac : 0.0f;
    success[b] = (float)hit;
    terminated[b] = hit || miss;
    truncated[b] = step_count[b] >= max_steps;
  }
  return 0;
}

/* What every copy of a Memory env sees (MemoryEnv._observe): image [n, 7, 7, 3] uint8, the
 * bytes of world[lookup[x size + y, dir, i, j]] (lookup: [size^2, 4, 7, 7] int64 world
 * indices, minigrid's view and visibility tabulated), and direction [n] int64. Returns 0, or
 * -1 (writing nothing) for a position, direction or table entry out of range. */
int memory_observe(int64_t n, int64_t size, const int64_t *lookup, const int32_t *world,
                   const int64_t *pos, const int64_t *dir, uint8_t *image, int64_t *direction) {
  const int64_t cells = size * size, stride = cells + 3, per = MEM_VIEW * MEM_VIEW;
  for (int64_t b = 0; b < n; ++b) {
    if (dir[b] < 0 || dir[b] > 3 || pos[2 * b] < 0 || pos[2 * b] >= size || pos[2 * b + 1] < 0 ||
        pos[2 * b + 1] >= size)
      return -1;
    const int64_t *at = lookup + ((pos[2 * b] * size + pos[2 * b + 1]) * 4 + dir[b]) * per;
    for (int64_t i = 0; i < per; ++i)
      if (at[i] < 0 || at[i] >= stride) return -1;
  }
  for (int64_t b = 0; b < n; ++b) {
    const int64_t *at = lookup + ((pos[2 * b] * size + pos[2 * b + 1]) * 4 + dir[b]) * per;
    uint8_t *out = image + b * per * 3;
    for (int64_t i = 0; i < per; ++i) {
      const int32_t code = world[b * stride + at[i]];
      out[3 * i] = (uint8_t)(code & 255);
      out[3 * i + 1] = (uint8_t)((code >> 8) & 255);
      out[3 * i + 2] = (uint8_t)((code >> 16) & 255);
    }
    direction[b] = dir[b];
  }
  return 0;
}

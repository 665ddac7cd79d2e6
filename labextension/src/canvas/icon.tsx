/**
 * A node type's icon, as its package declared it: text (an emoji, a symbol) drawn as text, or
 * a base64 SVG/PNG data URI drawn as an image (an SVG in an <img> runs no script and loads
 * nothing). Anything else is not drawn. The server checks the same when it loads the type.
 */
import React from 'react';

const DATA_ICON = /^data:image\/(svg\+xml|png);base64,[A-Za-z0-9+/]+={0,2}$/;

export function NodeIcon({ icon, className }: { icon?: string; className?: string }): JSX.Element | null {
  if (!icon) {
    return null;
  }
  const cls = `nf-icon${className ? ` ${className}` : ''}`;
  if (icon.startsWith('data:')) {
    return DATA_ICON.test(icon) && icon.length <= 16 * 1024 ? (
      <img className={cls} src={icon} alt="" aria-hidden="true" data-icon="image" />
    ) : null;
  }
  return (
    <span className={cls} aria-hidden="true" data-icon="text">
      {Array.from(icon).slice(0, 8).join('')}
    </span>
  );
}

/** Whether `url` is an http(s) address (a docs link is shown only then). */
export function isHttpUrl(url: string | undefined): url is string {
  return !!url && /^https?:\/\/[^\s]+$/i.test(url);
}
